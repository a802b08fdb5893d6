import Foundation
import Testing
@testable import PhiMobile

/// Token counts are what the calls that feed the model feed (the generated calls, from Swift).
@Suite("Token counts")
struct TokenCountTests {
    let text = "Emoji 👩‍💻 and 日本語<|end|>"

    @Test("countTokens is the prompt a generate feeds")
    func countTokensIsThePrompt() async throws {
        let model = try await Fixtures.model()
        let count = try model.countTokens(text: text)
        let ids = try model.tokenize(text: text)
        #expect(count == Int32(ids.count))
        let stats = try await collect(model.events(prompt: text, params: GenerationParams(maxTokens: 1, temperature: 0))).stats
        #expect(stats?.promptTokens == count)
    }

    @Test("countChatTokens of the history plus a message is that turn's prompt")
    func countChatTokensIsTheTurnsPrompt() async throws {
        let model = try await Fixtures.model()
        let session = model.newSession(history: [ChatMessage(role: .system, content: "You are terse.")])
        let params = GenerationParams(maxTokens: 4, temperature: 0)
        _ = try await collect(session.events(message: "Hi there", params: params))
        let next = session.history() + [ChatMessage(role: .user, content: "And <|user|> then?")]
        let counted = try model.countChatTokens(messages: next)
        let stats = try await collect(session.events(message: "And <|user|> then?", params: params)).stats
        #expect(stats?.promptTokens == counted)
        let chatIds = try model.tokenizeChat(messages: next)
        #expect(Int32(chatIds.count) == counted)
    }

    @Test("a ModelTokenizer reads only the header and agrees with the model")
    func aTokenizerAlone() async throws {
        let model = try await Fixtures.model()
        let alone = try ModelTokenizer.load(modelPath: try Fixtures.modelPath(), tokenizerPath: try Fixtures.tokenizerPath())
        let (ids, count) = (try alone.tokenize(text: text), try alone.countTokens(text: text))
        let (modelIds, modelCount) = (try model.tokenize(text: text), try model.countTokens(text: text))
        #expect(ids == modelIds)
        #expect(count == modelCount)
        #expect(throws: LlmError.self) { try ModelTokenizer.load(modelPath: "/nonexistent/model.gguf", tokenizerPath: nil) }
    }

    @Test("loadTokenizer is the blocking load as an async call, failures included")
    func loadTokenizerAsync() async throws {
        let model = try await Fixtures.model()
        let chat = [ChatMessage(role: .system, content: "You are terse."), ChatMessage(role: .user, content: text)]
        let alone = try await loadTokenizer(modelPath: try Fixtures.modelPath(), tokenizerPath: try Fixtures.tokenizerPath())
        let (count, modelCount) = (try alone.countChatTokens(messages: chat), try model.countChatTokens(messages: chat))
        #expect(count == modelCount)
        let missing = "/nonexistent/model.gguf"
        var blocking: LlmError?
        do { _ = try ModelTokenizer.load(modelPath: missing, tokenizerPath: nil) } catch let error as LlmError { blocking = error }
        let expected = try #require(blocking)
        await #expect(throws: expected) { try await loadTokenizer(modelPath: missing) }
    }
}
