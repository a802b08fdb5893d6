import Foundation
import Testing
@testable import PhiMobileChat

/// Paths from scripts/test-swift.sh: the synthetic reference Phi-3 model and
/// its tokenizer, and SmolLM2-135M-Instruct (tokenizer and chat template in
/// the GGUF) from scripts/fetch-fixtures.sh.
enum ChatFixtures {
    struct Missing: Error, CustomStringConvertible {
        let variable: String
        var description: String { "\(variable) is not set: run the Swift tests with scripts/test-swift.sh" }
    }

    static func environment(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { throw Missing(variable: name) }
        return value
    }

    static func modelPath() throws -> String { try environment("PHI_MOBILE_TEST_MODEL") }
    static func tokenizerPath() throws -> String { try environment("PHI_MOBILE_TEST_TOKENIZER") }
    static func smolLM2Path() throws -> String { try environment("PHI_MOBILE_TEST_SMOLLM2") }

    /// A fresh directory for one test's files.
    static func directory(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("phi-mobile-chat-\(ProcessInfo.processInfo.processIdentifier)")
            .appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A controller with the reference model loaded.
    static func loaded(_ settings: ChatController.Settings) async throws -> ChatController {
        let chat = ChatController(settings: settings)
        await chat.load(modelAt: try modelPath(), tokenizerPath: try tokenizerPath())
        let state = await chat.snapshot.state
        try #require(state == .ready, "loading the reference model: \(state)")
        return chat
    }
}

/// Records every snapshot a controller publishes, in order.
final class Recorder: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [ChatSnapshot] = [] // guarded by lock
    private var consumer: Task<Void, Never>?

    init(_ chat: ChatController) async {
        let updates = await chat.updates()
        consumer = Task { [weak self] in
            for await snapshot in updates { self?.append(snapshot) }
        }
    }

    deinit { consumer?.cancel() }

    private func append(_ snapshot: ChatSnapshot) {
        lock.lock()
        recorded.append(snapshot)
        lock.unlock()
    }

    var snapshots: [ChatSnapshot] {
        lock.lock()
        defer { lock.unlock() }
        return recorded
    }

    var states: [ChatState] { snapshots.map(\.state) }

    /// Waits (up to `seconds`) until a recorded snapshot satisfies `condition`.
    @discardableResult
    func wait(seconds: Double = 10, for condition: (ChatSnapshot) -> Bool) async throws -> ChatSnapshot {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let match = snapshots.first(where: condition) { return match }
            try await Task.sleep(nanoseconds: 2_000_000)
        }
        throw TimedOut()
    }

    struct TimedOut: Error {}
}

extension ChatState {
    var partial: String? {
        if case .generating(let partial) = self { return partial }
        return nil
    }

    var loadingProgress: Double? {
        if case .loading(let progress) = self { return progress }
        return nil
    }

    var isError: Bool {
        if case .error = self { return true }
        return false
    }
}

/// Collapses runs of equal states (a recorder may see a state repeated when
/// only other fields of the snapshot changed).
func distinct(_ states: [ChatState]) -> [ChatState] {
    states.reduce(into: []) { result, state in
        if result.last != state { result.append(state) }
    }
}
