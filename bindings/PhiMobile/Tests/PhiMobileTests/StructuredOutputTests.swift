import Foundation
import Testing
@testable import PhiMobile

/// `respond` with a response format, from Swift. The reference model's
/// weights are random, so whatever it prefers, only the mask makes its
/// answers valid.
@Suite("Structured output")
struct StructuredOutputTests {
    struct Digit: Decodable { let n: Int }

    let digit = """
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
         "required": ["n"], "additionalProperties": false}
        """

    func params(seed: Int64, maxTokens: Int32 = 40) -> GenerationParams {
        GenerationParams(maxTokens: maxTokens, temperature: 1, seed: seed)
    }

    @Test("respond decodes an answer valid for its schema, at any seed")
    func decodesTheSchemasShape() async throws {
        let model = try await Fixtures.model()
        for seed: Int64 in 1...4 {
            let session = model.newSession(history: [])
            let value = try await session.respond(to: "A digit as JSON", generating: Digit.self, schema: digit, params: params(seed: seed))
            #expect((1...9).contains(value.n))
            #expect(session.history().map(\.role) == [.user, .assistant])
        }
    }

    @Test("a regex answer matches whole")
    func regexMatchesWhole() async throws {
        let session = try await Fixtures.model().newSession(history: [])
        var p = params(seed: 7)
        p.responseFormat = .regex(pattern: "[A-Z]{2}-[0-9]{3}")
        let code = try await session.respond(to: "A code", params: p)
        #expect(code.wholeMatch(of: /[A-Z]{2}-[0-9]{3}/) != nil, "\(code)")
        #expect(session.history().last?.content == code)
    }

    @Test("an answer cut short is IncompleteAnswer with its partial text")
    func cutShort() async throws {
        let session = try await Fixtures.model().newSession(history: [])
        do {
            _ = try await session.respond(to: "A digit", generating: Digit.self, schema: digit, params: params(seed: 1, maxTokens: 2))
            Issue.record("expected IncompleteAnswer")
        } catch LlmError.incompleteAnswer(let stopReason, let partial) {
            #expect(stopReason == .maxTokens)
            #expect(partial.hasPrefix("{"), "\(partial)")
            #expect(session.history().last?.content == partial)
        }
    }

    @Test("a schema that does not compile is InvalidParameter naming response_format")
    func badSchema() async throws {
        let session = try await Fixtures.model().newSession(history: [])
        do {
            _ = try await session.respond(to: "x", generating: [Int].self, schema: #"{"type": "array", "uniqueItems": true}"#)
            Issue.record("expected InvalidParameter")
        } catch LlmError.invalidParameter(let name, let reason) {
            #expect(name == "response_format")
            #expect(reason.contains("uniqueItems"), "\(reason)")
        }
    }

    @Test("a cancelled task throws CancellationError")
    func cancelled() async throws {
        let session = try await Fixtures.model().newSession(history: [])
        let task = Task {
            while !Task.isCancelled { await Task.yield() }
            return try await session.respond(to: "x", params: params(seed: 1))
        }
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
    }
}
