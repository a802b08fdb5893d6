import Foundation
import Testing
@testable import PhiMobile

/// The async `downloadModel`'s errors and cancellation. The transfer itself
/// (resolve protocol, resume, integrity) is covered by the Rust tests against
/// a local Hub stand-in and by the Kotlin layer's tests.
@Suite("Download")
struct DownloadTests {
    /// A port on 127.0.0.1 with nothing listening.
    static let closedEndpoint = "http://127.0.0.1:9"

    static func request(filename: String = "model.gguf", endpoint: String = closedEndpoint) -> DownloadRequest {
        DownloadRequest(repoId: "org/model", filename: filename, endpoint: endpoint)
    }

    static func directory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("phi-mobile-download-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    @Test("an unreachable endpoint is LlmError.network")
    func unreachable() async throws {
        let dir = try Self.directory()
        let error = await llmError { try await downloadModel(Self.request(), to: dir) }
        guard case .network(let reason)? = error else {
            Issue.record("expected Network, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("127.0.0.1:9"))
    }

    @Test("a filename leaving the directory is InvalidParameter")
    func invalidFilename() async throws {
        let dir = try Self.directory()
        let error = await llmError { try await downloadModel(Self.request(filename: "../escape.gguf"), to: dir) }
        guard case .invalidParameter(let name, _)? = error else {
            Issue.record("expected InvalidParameter, got \(String(describing: error))")
            return
        }
        #expect(name == "filename")
    }

    @Test("timeouts outside 1...600000 ms are InvalidParameter naming the field")
    func invalidTimeouts() async throws {
        let dir = try Self.directory()
        for (request, field) in [
            (DownloadRequest(repoId: "org/model", filename: "model.gguf", connectTimeoutMs: 0), "connect_timeout_ms"),
            (DownloadRequest(repoId: "org/model", filename: "model.gguf", readTimeoutMs: -1), "read_timeout_ms"),
        ] {
            let error = await llmError { try await downloadModel(request, to: dir) }
            guard case .invalidParameter(let name, _)? = error else {
                Issue.record("expected InvalidParameter, got \(String(describing: error))")
                continue
            }
            #expect(name == field)
        }
    }

    @Test("a cancelled task throws CancellationError")
    func cancelled() async throws {
        let dir = try Self.directory()
        let task = Task {
            // Start the download only once the task is cancelled, so the
            // outcome does not depend on timing.
            while !Task.isCancelled { await Task.yield() }
            return try await downloadModel(Self.request(), to: dir)
        }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
    }

    @Test("the generated API reports Cancelled for a cancelled token")
    func cancelledToken() throws {
        let token = CancellationToken()
        token.cancel()
        #expect(throws: LlmError.cancelled) {
            try PhiMobileCore.downloadModel(request: Self.request(), directory: try Self.directory(), cancel: token)
        }
    }
}
