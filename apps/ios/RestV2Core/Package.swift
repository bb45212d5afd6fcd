// swift-tools-version:5.9
// Plain-Swift core of the iOS demo (Foundation only: no UIKit, Core Graphics or Core ML), so its
// tests run with `swift test` on macOS or Linux against golden vectors (GOLDEN_DIR=...).
import PackageDescription

let package = Package(
    name: "RestV2Core",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "RestV2Core", targets: ["RestV2Core"]),
    ],
    targets: [
        .target(name: "RestV2Core"),
        .testTarget(name: "RestV2CoreTests", dependencies: ["RestV2Core"]),
    ]
)
