// swift-tools-version:6.0
// libFuzzer harnesses for every parser of input from strangers (`make fuzz`). A package of its
// own because it builds with -sanitize=fuzzer,address, where libFuzzer supplies main().
import PackageDescription

let package = Package(
    name: "wtool-fuzz",
    dependencies: [.package(name: "wtool", path: "../..")],
    targets: [
        .executableTarget(name: "wtool-fuzz", dependencies: [.product(name: "WtoolLibraries", package: "wtool")],
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ]
)
