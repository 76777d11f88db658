import XCTest
@testable import Surgery

/// torch.randperm reproduced without torch (the values measured with torch 2.15, recorded in the
/// shared reference's checks): PEFT's FourierFT locations depend on them bit for bit.
final class TorchRandpermTests: XCTestCase {
    func testKnownPermutations() {
        XCTAssertEqual(TorchRandperm.prefix(n: 4096, count: 6, seed: 777), [2151, 945, 3161, 4091, 1983, 1566])
        XCTAssertEqual(TorchRandperm.prefix(n: 5, count: 5, seed: 42), [2, 4, 3, 0, 1])
        XCTAssertEqual(TorchRandperm.prefix(n: 11008, count: 6, seed: 777), [5223, 8838, 2827, 2991, 4527, 8308])
        // torch seeds the 32-bit generator with seed mod 2^32
        XCTAssertEqual(TorchRandperm.prefix(n: 4096, count: 6, seed: (1 << 32) + 777), [2151, 945, 3161, 4091, 1983, 1566])
    }

    func testPrefixIsAPermutationPrefix() {
        let full = TorchRandperm.prefix(n: 1000, count: 1000, seed: 3)
        XCTAssertEqual(Set(full).count, 1000)
        XCTAssertEqual(full.min(), 0)
        XCTAssertEqual(full.max(), 999)
        XCTAssertEqual(Array(full.prefix(17)), TorchRandperm.prefix(n: 1000, count: 17, seed: 3))
    }
}
