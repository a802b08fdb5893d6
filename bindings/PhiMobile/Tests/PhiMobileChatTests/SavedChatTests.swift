import Foundation
import Testing
@testable import PhiMobileChat

/// A controller with `chatFile` and the reference model loaded.
func loaded(_ settings: ChatController.Settings, chatFile: URL?) async throws -> ChatController {
    let chat = ChatController(settings: settings, chatFile: chatFile)
    await chat.load(modelAt: try ChatFixtures.modelPath(), tokenizerPath: try ChatFixtures.tokenizerPath())
    let state = await chat.snapshot.state
    try #require(state == .ready, "loading the reference model: \(state)")
    return chat
}

func exists(_ url: URL) -> Bool { FileManager.default.fileExists(atPath: url.path) }

// Serialized, as the other controller suite: a few full turns each, on two cores.
@Suite("Saved chats in the chat state machine", .serialized)
struct SavedChatControllerTests {
    let first = "Write a haiku about ice hockey."
    let second = "And one about skiing?"

    @Test("a controller recreated with the chat file shows the chat and answers as the uninterrupted one")
    func restoredAcrossControllers() async throws {
        // In a directory that does not exist yet: the controller makes it.
        let file = try ChatFixtures.directory("restore").appendingPathComponent("chats/last.phichat")
        let before = try await loaded(greedy, chatFile: file)
        let firstAnswer = try #require(await before.send(first))
        #expect(exists(file), "saved after the turn")
        #expect(await before.snapshot.chatFileError == nil)
        let transcript = await before.snapshot.transcript
        #expect(transcript.count == 3)
        await before.close()
        #expect(exists(file), "close() keeps the chat for the next load")

        let after = try await loaded(greedy, chatFile: file)
        let snapshot = await after.snapshot
        #expect(snapshot.transcript == transcript)
        #expect(snapshot.chatFileError == nil)
        let resumed = try #require(await after.send(second))

        // The same two turns in one controller that never stopped (and saves nothing).
        let uninterrupted = try await ChatFixtures.loaded(greedy)
        #expect(try #require(await uninterrupted.send(first)).tokenIds == firstAnswer.tokenIds)
        let expected = try #require(await uninterrupted.send(second))
        #expect(!expected.tokenIds.isEmpty)
        #expect(resumed.tokenIds == expected.tokenIds)
        // The restored KV cache served the history: only the new turn was run.
        #expect(resumed.cachedPromptTokens == expected.cachedPromptTokens)
        #expect(resumed.cachedPromptTokens > 0)

        // The second turn was saved too.
        let again = try await loaded(greedy, chatFile: file)
        #expect(await again.snapshot.transcript == after.snapshot.transcript)
        #expect(await again.snapshot.transcript.count == 5)
    }

    @Test("a damaged chat file is deleted and a new chat starts; its first turn is saved", arguments: ["garbage", "truncated"])
    func damagedFile(kind: String) async throws {
        let file = try ChatFixtures.directory("damaged").appendingPathComponent("last.phichat")
        if kind == "garbage" {
            try Data(repeating: 0x5A, count: 10_000).write(to: file)
        } else {
            let saver = try await loaded(greedy, chatFile: file)
            _ = try #require(await saver.send(first))
            await saver.close()
            let bytes = try Data(contentsOf: file)
            try bytes.prefix(bytes.count - 100).write(to: file)
        }

        let chat = try await loaded(greedy, chatFile: file)
        let snapshot = await chat.snapshot
        #expect(snapshot.transcript == [system], "a new chat")
        #expect(snapshot.canSend)
        guard case .chatNotRestored(.invalidSavedChat(let reason))? = snapshot.chatFileError else {
            Issue.record("expected chatNotRestored(InvalidSavedChat), got \(String(describing: snapshot.chatFileError))")
            return
        }
        #expect(!reason.isEmpty)
        #expect(snapshot.chatFileError?.message.contains("A new chat was started") == true)
        #expect(!exists(file), "the file that cannot be restored is gone")

        _ = try #require(await chat.send(first))
        #expect(exists(file))
        #expect(await chat.snapshot.chatFileError == nil, "a good save clears the notice")
        let next = try await loaded(greedy, chatFile: file)
        #expect(await next.snapshot.transcript == chat.snapshot.transcript)
    }

    @Test("another model's chat file starts a new chat and is deleted")
    func anotherModel() async throws {
        let file = try ChatFixtures.directory("other").appendingPathComponent("last.phichat")
        let chat = try await loaded(greedy, chatFile: file)
        _ = try #require(await chat.send(first))
        #expect(exists(file))

        await chat.load(modelAt: try ChatFixtures.smolLM2Path())
        let snapshot = await chat.snapshot
        #expect(snapshot.state == .ready)
        #expect(snapshot.model?.architecture == "llama")
        #expect(snapshot.transcript == [system])
        guard case .chatNotRestored(.invalidSavedChat(let reason))? = snapshot.chatFileError else {
            Issue.record("expected chatNotRestored(InvalidSavedChat), got \(String(describing: snapshot.chatFileError))")
            return
        }
        #expect(reason.contains("another model"), "\(reason)")
        #expect(!exists(file))
        await chat.close()
    }

    @Test("a chat file that cannot be written is reported, and the chat goes on")
    func unwritable() async throws {
        // The chat file's directory would be a regular file.
        let blocker = try ChatFixtures.directory("unwritable").appendingPathComponent("blocker")
        try Data("not a directory".utf8).write(to: blocker)
        let chat = try await loaded(greedy, chatFile: blocker.appendingPathComponent("last.phichat"))
        let stats = try #require(await chat.send(first))
        let snapshot = await chat.snapshot
        #expect(snapshot.state == .ready)
        #expect(snapshot.transcript.last == ChatMessage(role: .assistant, content: stats.text))
        guard case .chatNotSaved(.storage)? = snapshot.chatFileError else {
            Issue.record("expected chatNotSaved(Storage), got \(String(describing: snapshot.chatFileError))")
            return
        }
        #expect(snapshot.chatFileError?.message.contains("could not be saved") == true)
        #expect(try #require(await chat.send(second)).generatedTokens > 0)
        #expect(await chat.snapshot.transcript.count == 5)
    }

    @Test("reset() deletes the saved chat: the next start begins anew")
    func resetDeletes() async throws {
        let file = try ChatFixtures.directory("reset").appendingPathComponent("last.phichat")
        let chat = try await loaded(greedy, chatFile: file)
        _ = try #require(await chat.send(first))
        #expect(exists(file))
        await chat.reset()
        #expect(!exists(file))
        let next = try await loaded(greedy, chatFile: file)
        #expect(await next.snapshot.transcript == [system])
        #expect(await next.snapshot.chatFileError == nil, "no file is not an error")
    }

    @Test("trimMemory() releases the KV cache past the conversation; the next turn is unchanged")
    func trimMemory() async throws {
        var settings = greedy
        settings.params = .greedy(maxTokens: 4)
        let chat = try await loaded(settings, chatFile: nil)
        let perToken = try #require(await chat.snapshot.model).kvBytesPerToken
        #expect(perToken > 0)
        // A first turn past one 256-position step of the cache (the context is 512)...
        let longMessage = String(repeating: "ice hockey is a sport played on ice ", count: 36)
        let long = try #require(await chat.send(longMessage))
        try #require(long.promptTokens > 260 && long.promptTokens < 500, "\(long.promptTokens) prompt tokens")
        #expect(await chat.trimMemory() == 512 * perToken, "the cache holds the long turn")
        // ...then a short chat: the cache keeps its room until trimmed.
        await chat.reset()
        let short = try #require(await chat.send("Hi"))
        #expect(await chat.trimMemory() == 256 * perToken, "trimmed to the step the chat fills")
        let next = try #require(await chat.send(second))

        let fresh = try await loaded(settings, chatFile: nil)
        #expect(try #require(await fresh.send("Hi")).tokenIds == short.tokenIds)
        #expect(try #require(await fresh.send(second)).tokenIds == next.tokenIds)
        #expect(await ChatController().trimMemory() == 0, "no model")
    }
}
