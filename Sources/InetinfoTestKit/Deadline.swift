/// Waiting with deadlines instead of sleeping: every wait in a test ends by itself.
public enum Deadline {
    /// Polls `probe` until it returns a value; throws after `timeout` with the last error seen.
    /// A ``TestHostError`` thrown by the probe ends the wait at once.
    public static func eventually<T>(_ what: String, timeout: Duration, every interval: Duration = .milliseconds(20),
                                     _ probe: () throws -> T?) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        var lastError: (any Error)?
        while ContinuousClock.now < deadline {
            do {
                if let value = try probe() { return value }
            } catch let error as TestHostError {
                throw error
            } catch {
                lastError = error
            }
            try await Task.sleep(for: interval)
        }
        throw TestHostError("timed out after \(timeout) waiting for \(what)\(lastError.map { "; last error: \($0)" } ?? "")")
    }
}
