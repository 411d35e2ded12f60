import NIOCore
import NIOHTTP1
import NIOPosix
import Supervision

/// The `http` hosted service: HTTP/1.1 static files from the web root.
public struct HTTPService: HostedService {
    public let name = "http"
    let settings: HTTPSettings
    let threads: Int

    public init(settings: HTTPSettings, threads: Int = 1) {
        self.settings = settings
        self.threads = threads
    }

    public func run(_ context: InstanceContext) async throws {
        let root = settings.webRoot
        try await ServerInstance.run(context, threads: threads) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                try channel.pipeline.syncOperations.addHandler(StaticFileHandler(root: root))
            }
        }
    }
}
