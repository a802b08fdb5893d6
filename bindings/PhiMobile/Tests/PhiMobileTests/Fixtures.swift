import Foundation
import Testing
@testable import PhiMobile

/// Paths from scripts/test-swift.sh: the synthetic reference model (written by
/// `cargo run --release --example synthetic_gguf -- reference`) and the Phi-3
/// tokenizer (scripts/fetch-fixtures.sh).
enum Fixtures {
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

    static func config(contextLength: Int32? = nil) throws -> ModelConfig {
        ModelConfig(modelPath: try modelPath(), tokenizerPath: try tokenizerPath(), contextLength: contextLength)
    }

    /// The reference model, loaded once for the whole test run.
    private static let shared = Task { try await LanguageModel.load(config: config()) }

    static func model() async throws -> LanguageModel { try await shared.value }

    /// The repo's root, found from this file's path.
    static let repoRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent() // PhiMobileTests
        .deletingLastPathComponent() // Tests
        .deletingLastPathComponent() // swift
        .deletingLastPathComponent() // bindings
        .deletingLastPathComponent()

    /// Writes a scratch file for a bad-input test (in a per-process temp dir).
    static func scratch(_ name: String, _ bytes: Data) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("phi-mobile-swift-\(ProcessInfo.processInfo.processIdentifier)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        try bytes.write(to: url)
        return url.path
    }
}

/// tests/data/reference_phi3.json: greedy ids from transformers' Phi3ForCausalLM
/// on the synthetic reference model, shared with the Rust test.
struct Reference: Decodable {
    struct Case: Decodable {
        let name: String
        let prompt: String
        let promptIds: [Int32]
        let expectedIds: [Int32]

        enum CodingKeys: String, CodingKey {
            case name, prompt
            case promptIds = "prompt_ids"
            case expectedIds = "expected_ids"
        }
    }

    let generator: String
    let cases: [Case]

    static func load() throws -> Reference {
        let url = Fixtures.repoRoot.appendingPathComponent("tests/data/reference_phi3.json")
        return try JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
    }

    static func `case`(_ name: String) throws -> Case {
        try #require(load().cases.first { $0.name == name })
    }
}

/// Runs a blocking generated-API call on its own thread, as the async layer does.
func offThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        runOnOwnThread { continuation.resume(with: Result { try body() }) }
    }
}

/// Collects an event stream: the concatenated text pieces and the final stats.
func collect(_ events: AsyncThrowingStream<GenerationEvent, Error>) async throws -> (text: String, stats: GenerationResult?) {
    var text = ""
    var stats: GenerationResult?
    for try await event in events {
        switch event {
        case .text(let piece):
            #expect(stats == nil, "text after .done")
            text += piece
        case .toolCalls(let calls):
            #expect(stats == nil && !calls.isEmpty, "calls after .done")
        case .done(let final):
            stats = final
        }
    }
    return (text, stats)
}

func collect(_ pieces: AsyncThrowingStream<String, Error>) async throws -> String {
    var text = ""
    for try await piece in pieces { text += piece }
    return text
}

/// A sink for the generated blocking API that records pieces and can throw.
final class RecordingSink: TokenSink, @unchecked Sendable {
    private let lock = NSLock()
    private var received: [String] = []
    private let failAt: Int?
    private let failure: Error

    init(failAt: Int? = nil, failure: Error = AppFailure()) {
        self.failAt = failAt
        self.failure = failure
    }

    struct AppFailure: Error {}

    var pieces: [String] {
        lock.lock()
        defer { lock.unlock() }
        return received
    }

    func onText(piece: String) throws -> Bool {
        lock.lock()
        received.append(piece)
        let count = received.count
        lock.unlock()
        if count == failAt { throw failure }
        return true
    }
}

/// The error a call threw, as an `LlmError` (nil if it did not throw).
func llmError<T>(_ body: () async throws -> T) async -> LlmError? {
    do {
        _ = try await body()
        return nil
    } catch let error as LlmError {
        return error
    } catch {
        Issue.record("expected an LlmError, got \(error)")
        return nil
    }
}
