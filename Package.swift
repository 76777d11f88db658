// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "wtool",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "wtool", targets: ["wtool"]),
        // The libraries, for the fuzzing package in Tests/fuzz (built with -sanitize=fuzzer).
        .library(name: "WtoolLibraries", targets: ["SafeTensors", "Surgery"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // mergekit recipes are YAML.
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // System libraries: Debian's OpenBLAS (cblas), LAPACKE and zlib.
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLAPACKE", path: "Sources/CLAPACKE", pkgConfig: "lapacke",
                       providers: [.apt(["liblapacke-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        // F16C half-precision kernels with a runtime CPU check (no unsafe flags needed).
        .target(name: "CHalf", path: "Sources/CHalf"),
        // ggml's block encoders at C speed: AVX2 chosen at run time, a portable path with the same
        // bytes. No fused multiply-adds (ggml rounds the multiply and the add apart); optimised in
        // debug builds too, like Surgery.
        .target(name: "CQuant", dependencies: ["CHalf"], path: "Sources/CQuant",
                cSettings: [.unsafeFlags(["-ffp-contract=off"]), .unsafeFlags(["-O2"], .when(configuration: .debug))]),
        // The element-wise f64 passes of low-rank extraction (delta, residual), AVX2 at run time.
        .target(name: "CLowRank", dependencies: ["CHalf"], path: "Sources/CLowRank",
                cSettings: [.unsafeFlags(["-ffp-contract=off"]), .unsafeFlags(["-O2"], .when(configuration: .debug))]),
        // The per-entry passes of the task-arithmetic merges (draws, DELLA's ranks, sign election,
        // report sums), AVX2 at run time.
        .target(name: "CMerge", dependencies: ["CHalf"], path: "Sources/CMerge",
                cSettings: [.unsafeFlags(["-ffp-contract=off"]), .unsafeFlags(["-O2"], .when(configuration: .debug))]),
        // Products of a large matrix with thin panels (the SVD engine's power iterations), AVX-512
        // at run time (BLAS otherwise).
        .target(name: "CPanel", path: "Sources/CPanel",
                cSettings: [.unsafeFlags(["-ffp-contract=off"]), .unsafeFlags(["-O2"], .when(configuration: .debug))]),
        // The dense linear assignment solver (Jonker-Volgenant), AVX2 at run time.
        .target(name: "CAssign", path: "Sources/CAssign",
                cSettings: [.unsafeFlags(["-ffp-contract=off"]), .unsafeFlags(["-O2"], .when(configuration: .debug))]),
        // libc settings Swift cannot reach (malloc tuning, cleanup of temporaries on interrupt).
        .target(name: "CSystem", path: "Sources/CSystem"),
        // The file format alone: header parsing/validation, mmap reader, shards, writer, codecs.
        .target(name: "SafeTensors", dependencies: ["CHalf", "CZlib", "CSystem"]),
        // Thin Swift over BLAS/LAPACK, and the seeded RNG.
        .target(name: "Linalg", dependencies: ["COpenBLAS", "CLAPACKE", "CAssign", "CPanel"]),
        // The operations and the streaming engine they share.
        // Optimised in debug builds too: the tests run the debug binary on real tensors, and the
        // K-quant searches (SIMD lanes) are a hundred times slower unoptimised.
        .target(name: "Surgery", dependencies: ["SafeTensors", "Linalg", "CSystem", "CQuant", "CLowRank", "CMerge", .product(name: "Yams", package: "Yams")],
                swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        .executableTarget(name: "wtool", dependencies: [
            "Surgery", "SafeTensors", "Linalg",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors"]),
        .testTarget(name: "LinalgTests", dependencies: ["Linalg", "CPanel"]),
        .testTarget(name: "SurgeryTests", dependencies: ["Surgery", "SafeTensors", "Linalg", "CQuant", "CLowRank", "CMerge", "CAssign"]),
        .testTarget(name: "wtoolTests", dependencies: ["SafeTensors"]),
    ]
)
