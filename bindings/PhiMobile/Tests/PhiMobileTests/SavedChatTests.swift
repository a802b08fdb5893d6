import Foundation
import Testing
@testable import PhiMobile

/// A fresh directory for one test's chat files.
func chatDirectory(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("phi-mobile-swift-\(ProcessInfo.processInfo.processIdentifier)")
        .appendingPathComponent("\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite("Saved chats")
struct SavedChatTests {
    let system = ChatMessage(role: .system, content: "You are a helpful assistant.")
    let params = GenerationParams.greedy(maxTokens: 24)

    @Test("save after a turn, restore in another LanguageModel: the same history, the same next greedy answer, from the cache")
    func saveAndRestore() async throws {
        let model = try await Fixtures.model()
        let session = model.newSession(history: [system])
        _ = try await collect(session.events(message: "Write a haiku about ice hockey.", params: params))
        let file = try chatDirectory("restore").appendingPathComponent("chat.phichat")
        try await session.save(to: file)
        #expect(FileManager.default.fileExists(atPath: file.path))

        // A second load of the same file, as after the app was killed.
        let reloaded = try await LanguageModel.load(config: Fixtures.config())
        let restored = try await reloaded.restoreSession(from: file)
        let history = session.history()
        #expect(history.count == 3, "system, user, assistant")
        #expect(restored.history() == history)

        let question = "And one about skiing?"
        let uninterrupted = try #require(try await collect(session.events(message: question, params: params)).stats)
        let resumed = try #require(try await collect(restored.events(message: question, params: params)).stats)
        #expect(!uninterrupted.tokenIds.isEmpty)
        #expect(resumed.tokenIds == uninterrupted.tokenIds)
        // The history came back in the KV cache: only the new turn was run.
        #expect(resumed.cachedPromptTokens == uninterrupted.cachedPromptTokens)
        #expect(resumed.cachedPromptTokens > 0)
        #expect(restored.history() == session.history())
    }

    @Test("save(to:) during a turn waits for it and saves it too")
    func saveWaitsForTheTurn() async throws {
        let model = try await Fixtures.model()
        let session = model.newSession(history: [])
        let (consumer, progress) = consume(session.events(message: "Tell me a story.", params: GenerationParams(maxTokens: 96, seed: 5)))
        await waitFor(2, in: progress)
        let file = try chatDirectory("during").appendingPathComponent("chat.phichat")
        try await session.save(to: file)
        let stats = try #require(try await consumer.value.stats)

        let restored = try await model.restoreSession(from: file)
        #expect(restored.history() == [
            ChatMessage(role: .user, content: "Tell me a story."),
            ChatMessage(role: .assistant, content: stats.text),
        ])
    }

    @Test("a truncated, an empty, a garbage or a missing file is InvalidSavedChat; the saved one still restores")
    func badFilesAreRefused() async throws {
        let model = try await Fixtures.model()
        let session = model.newSession(history: [system])
        _ = try await collect(session.events(message: "Hello", params: params))
        let directory = try chatDirectory("bad")
        let good = directory.appendingPathComponent("chat.phichat")
        try await session.save(to: good)
        let bytes = try Data(contentsOf: good)

        var random = 0x9E37_79B9 as UInt32
        let garbage = Data((0..<bytes.count).map { _ -> UInt8 in
            random ^= random << 13; random ^= random >> 17; random ^= random << 5
            return UInt8(truncatingIfNeeded: random)
        })
        var files: [(String, URL)] = []
        for (name, content) in [
            ("half", bytes.prefix(bytes.count / 2)),
            ("one byte short", bytes.prefix(bytes.count - 1)),
            ("empty", Data()),
            ("garbage", garbage),
        ] {
            let file = directory.appendingPathComponent("\(name).phichat")
            try content.write(to: file)
            files.append((name, file))
        }
        files.append(("the model file", URL(fileURLWithPath: try Fixtures.modelPath())))
        files.append(("missing", directory.appendingPathComponent("none.phichat")))
        for (name, file) in files {
            let error = await llmError { try await model.restoreSession(from: file) }
            guard case .invalidSavedChat(let reason)? = error else {
                Issue.record("\(name): expected InvalidSavedChat, got \(String(describing: error))")
                continue
            }
            #expect(!reason.isEmpty, "\(name)")
        }
        // The refusals were the edits: the file they came from restores.
        #expect(try await model.restoreSession(from: good).history() == session.history())
    }

    @Test("saving into a directory that does not exist is Storage")
    func unwritable() async throws {
        let session = try await Fixtures.model().newSession(history: [system])
        let file = URL(fileURLWithPath: "/nonexistent/phi-mobile/chat.phichat")
        guard case .storage? = await llmError({ try await session.save(to: file) }) else {
            Issue.record("expected Storage")
            return
        }
    }
}
