import Foundation
import NIOCore
import NIOPosix
import Supervision

/// The `smtp` hosted service: an ESMTP receiver delivering to Maildir.
public struct SMTPService: HostedService {
    public let name = "smtp"
    let settings: SMTPSettings

    public init(settings: SMTPSettings) {
        self.settings = settings
    }

    public func run(_ context: InstanceContext) async throws {
        let writer = MaildirWriter(root: settings.mailRoot, hostName: settings.hostName)
        if context.number == 1 {
            // Left by a host that was killed mid-delivery: never acknowledged, so safe to remove.
            let removed = writer.cleanTemporaryFiles()
            if removed > 0 { context.logger.notice("removed unfinished deliveries from tmp/", metadata: ["files": "\(removed)"]) }
        }
        let settings = self.settings
        try await ServerInstance.run(context) { channel in
            channel.eventLoop.makeCompletedFuture {
                let session = SMTPSession(hostName: settings.hostName, domains: settings.domains,
                                          limits: .init(maxMessageSize: settings.maxMessageSize))
                try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .seconds(300)))
                try channel.pipeline.syncOperations.addHandler(SMTPHandler(session: session, writer: writer, logger: context.logger))
            }
        }
    }
}
