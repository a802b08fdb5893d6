import Foundation
import Testing
@testable import PhiMobile

/// Every `LlmError` variant a Swift caller can meet, through the async layer
/// and the generated API. (`Inference` needs a failure inside candle that no
/// input reaches; the Rust tests cover its mapping.)
@Suite("Errors")
struct ErrorTests {
    @Test("ModelNotFound")
    func modelNotFound() async throws {
        let config = ModelConfig(modelPath: "/nonexistent/model.gguf", tokenizerPath: try Fixtures.tokenizerPath())
        let error = await llmError { try await LanguageModel.load(config: config) }
        #expect(error == .modelNotFound(what: "/nonexistent/model.gguf"))
        // The Rust sentence, written once in src/ffi/error.rs (tests/bad_input.rs checks the same words).
        #expect(error?.localizedDescription == "Model not found: /nonexistent/model.gguf.")
        #expect(error.map { "\($0)" } == "Model not found: /nonexistent/model.gguf.")
    }

    @Test("InvalidModel: an empty file")
    func invalidModel() async throws {
        let config = ModelConfig(modelPath: try Fixtures.scratch("empty.gguf", Data()), tokenizerPath: try Fixtures.tokenizerPath())
        let error = await llmError { try await LanguageModel.load(config: config) }
        guard case .invalidModel(let reason)? = error else {
            Issue.record("expected InvalidModel, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("empty"), "\(reason)")
    }

    @Test("UnsupportedArchitecture")
    func unsupportedArchitecture() async throws {
        // The reference model with general.architecture = "gpt2": the key, its
        // type (8 = string), the value's length (u64 4), then "phi3".
        var bytes = try Data(contentsOf: URL(fileURLWithPath: Fixtures.modelPath()))
        let key = Data("general.architecture".utf8) + Data([8, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0])
        let found = try #require(bytes.range(of: key + Data("phi3".utf8)))
        bytes.replaceSubrange(found.upperBound - 4..<found.upperBound, with: Data("gpt2".utf8))
        let config = ModelConfig(modelPath: try Fixtures.scratch("gpt2.gguf", bytes), tokenizerPath: try Fixtures.tokenizerPath())
        let error = await llmError { try await LanguageModel.load(config: config) }
        #expect(error == .unsupportedArchitecture(architecture: "gpt2"))
    }

    @Test("Tokenizer: a tokenizer file that is not JSON")
    func tokenizer() async throws {
        let notJSON = try Fixtures.scratch("not-json.json", Data("this is not json".utf8))
        let config = ModelConfig(modelPath: try Fixtures.modelPath(), tokenizerPath: notJSON)
        let error = await llmError { try await LanguageModel.load(config: config) }
        guard case .tokenizer? = error else {
            Issue.record("expected Tokenizer, got \(String(describing: error))")
            return
        }
    }

    @Test("InvalidParameter: a negative count, at load, from a stream and from a chat turn")
    func invalidParameter() async throws {
        // Counts are signed in Swift; a negative one is refused by name, not wrapped around.
        let config = ModelConfig(modelPath: try Fixtures.modelPath(), tokenizerPath: try Fixtures.tokenizerPath(), contextLength: -1)
        guard case .invalidParameter(let field, _)? = await llmError({ try await LanguageModel.load(config: config) }) else {
            Issue.record("expected InvalidParameter at load")
            return
        }
        #expect(field == "context_length")

        let model = try await Fixtures.model()
        let params = GenerationParams(maxTokens: -1)
        let error = await llmError { try await collect(model.stream(prompt: "Hello", params: params)) }
        #expect(error == .invalidParameter(name: "max_tokens", reason: "must not be negative, got -1"))
        #expect(error?.localizedDescription == "Invalid parameter max_tokens: must not be negative, got -1.")
        let chatError = await llmError { try await collect(model.newSession(history: []).events(message: "Hi", params: params)) }
        #expect(chatError == error)
    }

    @Test("ContextOverflow: a 16-token context and a long prompt")
    func contextOverflow() async throws {
        let small = try await LanguageModel.load(config: Fixtures.config(contextLength: 16))
        #expect(small.info().contextLength == 16)
        let prompt = try Reference.case("long").prompt
        let needed = Int32(try small.tokenize(text: prompt).count)
        #expect(needed > 16)

        // A prompt too long in bytes for the context is refused before it is
        // tokenized, so `needed` is then a lower bound of its token count.
        guard case .contextOverflow(let lowerBound, 16)? = await llmError({ try await collect(small.events(prompt: prompt)) }) else {
            Issue.record("expected ContextOverflow with available 16")
            return
        }
        #expect(lowerBound > 16 && lowerBound <= needed, "needed \(lowerBound) of at most \(needed)")

        let chat = small.newSession(history: [])
        guard case .contextOverflow(_, let available)? = await llmError({ try await collect(chat.stream(message: prompt)) }) else {
            Issue.record("expected ContextOverflow from a chat turn")
            return
        }
        #expect(available == 16)
        #expect(chat.history().isEmpty, "a failed turn leaves the history as it was")
        // A prompt that fits still works on the small model.
        let (_, stats) = try await collect(small.events(prompt: "Hi", params: .greedy(maxTokens: 4)))
        #expect(try #require(stats).generatedTokens > 0)
    }

    @Test("Callback: a throwing sink, and the model still works", arguments: [
        RecordingSink.AppFailure() as Error,
        LlmError.tokenizer(reason: "thrown by the app") as Error,
    ])
    func throwingSink(failure: Error) async throws {
        let model = try await Fixtures.model()
        let params = GenerationParams.greedy(maxTokens: 32)
        let failing = RecordingSink(failAt: 2, failure: failure)
        let error = await llmError { try await offThread { try model.generate(prompt: "Hello, world", params: params, sink: failing) } }
        guard case .callback(let reason)? = error else {
            Issue.record("expected Callback, got \(String(describing: error))")
            return
        }
        #expect(!reason.isEmpty)
        #expect(failing.pieces.count == 2, "generation stopped at the throwing call")

        // The model still works, with the same greedy ids.
        let ok = RecordingSink()
        let stats = try await offThread { try model.generate(prompt: "Hello, world", params: params, sink: ok) }
        #expect(try stats.tokenIds == Reference.case("hello").expectedIds)

        // In a chat turn: the failed turn is not recorded and the session goes on.
        let chat = model.newSession(history: [])
        let chatFailing = RecordingSink(failAt: 1, failure: failure)
        let chatError = await llmError { try await offThread { try chat.send(message: "Hi", params: params, sink: chatFailing) } }
        guard case .callback? = chatError else {
            Issue.record("expected Callback from a chat turn, got \(String(describing: chatError))")
            return
        }
        #expect(chat.history().isEmpty)
        let (text, next) = try await collect(chat.events(message: "Hi", params: params))
        #expect(try #require(next).text == text)
        #expect(chat.history().count == 2)
    }
}
