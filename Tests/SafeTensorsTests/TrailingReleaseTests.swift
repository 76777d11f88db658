import XCTest
@testable import SafeTensors

/// TrailingRelease gathers a streaming reader's consecutive blocks into few, large releases, and
/// releases every byte it was told of exactly once.
final class TrailingReleaseTests: XCTestCase {
    func testSequentialBlocksAreReleasedInChunksAndAtTheEnd() {
        let block = 128 << 10, end = 10 * TrailingRelease.chunk + 3 * block + 5
        var released: [Range<Int>] = []
        var r = TrailingRelease(end: end) { released.append($0) }
        var at = 0
        while at < end { let next = min(end, at + block); r.done(with: at..<next); at = next }
        XCTAssertEqual(released.count, 11)   // ten whole chunks, then the rest at the tensor's end
        XCTAssertEqual(released.first, 0..<TrailingRelease.chunk)
        XCTAssertEqual(released.last?.upperBound, end)
        XCTAssertEqual(zip(released, released.dropFirst()).filter { $0.upperBound != $1.lowerBound }.count, 0, "contiguous, no overlap")
        r.flush()
        XCTAssertEqual(released.count, 11, "nothing left pending")
    }

    func testAReadElsewhereReleasesTheRunBeforeIt() {
        var released: [Range<Int>] = []
        var r = TrailingRelease(end: 1 << 30) { released.append($0) }
        r.done(with: 0..<100)
        r.done(with: 100..<300)
        XCTAssertEqual(released, [])
        r.done(with: 5000..<5100)   // a sample read, or a new pass from the start
        XCTAssertEqual(released, [0..<300])
        r.done(with: 0..<10)
        XCTAssertEqual(released, [0..<300, 5000..<5100])
        r.flush()
        XCTAssertEqual(released, [0..<300, 5000..<5100, 0..<10])
    }
}
