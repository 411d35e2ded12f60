// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "inetinfo",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "inetinfo", targets: ["inetinfo"]),
        .executable(name: "inetinfoctl", targets: ["inetinfoctl"]),
        .library(name: "Supervision", targets: ["Supervision"]),
        .library(name: "InetinfoTestKit", targets: ["InetinfoTestKit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        .systemLibrary(name: "CProcessControl"),
        .target(name: "CCrashMarker"),
        .target(name: "CJournal"),
        .target(
            name: "Systemd",
            dependencies: [
                "CSystemd",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Supervision",
            dependencies: [
                .product(name: "CoreMetrics", package: "swift-metrics"),
                "CCrashMarker",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "HTTPService",
            dependencies: [
                .product(name: "CoreMetrics", package: "swift-metrics"),
                "Supervision",
                "Systemd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("DefaultWebRoot")]
        ),
        .target(
            name: "SMTPService",
            dependencies: [
                .product(name: "CoreMetrics", package: "swift-metrics"),
                "CJournal",
                "Supervision",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "HostControl",
            dependencies: [
                "Supervision",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "InetinfoHost",
            dependencies: [
                "Systemd", "Supervision", "HostControl", "SMTPService", "HTTPService", "CProcessControl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "InetinfoTestKit",
            dependencies: [
                "InetinfoHost", "HostControl", "Supervision",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "inetinfo",
            dependencies: [
                "InetinfoHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "inetinfoctl",
            dependencies: [
                "HostControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "smtp-session-fuzzer",
            dependencies: [
                "SMTPService",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Fuzz/smtp-session-fuzzer"
        ),
        .executableTarget(
            name: "http-request-fuzzer",
            dependencies: [
                "HTTPService",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Fuzz/http-request-fuzzer"
        ),
        .executableTarget(
            name: "http-fields-fuzzer",
            dependencies: [
                "HTTPService",
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Fuzz/http-fields-fuzzer"
        ),
        .executableTarget(
            name: "control-request-fuzzer",
            dependencies: [
                "HostControl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ],
            path: "Fuzz/control-request-fuzzer"
        ),
        .executableTarget(
            name: "worker-message-fuzzer",
            dependencies: [
                "InetinfoHost",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ],
            path: "Fuzz/worker-message-fuzzer"
        ),
        .executableTarget(
            name: "flight-recording-fuzzer",
            dependencies: ["Supervision", "HostControl"],
            path: "Fuzz/flight-recording-fuzzer"
        ),
        .executableTarget(
            name: "figure-file-fuzzer",
            dependencies: ["InetinfoHost"],
            path: "Fuzz/figure-file-fuzzer"
        ),
        .executableTarget(
            name: "journal-record-fuzzer",
            dependencies: ["SMTPService"],
            path: "Fuzz/journal-record-fuzzer"
        ),
        .executableTarget(
            name: "configuration-fuzzer",
            dependencies: ["InetinfoHost"],
            path: "Fuzz/configuration-fuzzer"
        ),
        .executableTarget(
            name: "restart-latency",
            dependencies: [
                "Supervision", "HTTPService",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/restart-latency"
        ),
        .testTarget(
            name: "SupervisionTests",
            dependencies: [
                "Supervision",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "SMTPServiceTests",
            dependencies: [
                "SMTPService",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "InetinfoTests",
            dependencies: [
                "InetinfoHost", "HostControl", "Systemd", "InetinfoTestKit",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
