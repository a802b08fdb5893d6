import Foundation
import Testing
@testable import PhiMobile

/// Tool calls in the event stream, on the synthetic Phi-3 (random weights:
/// the calls are forced with `.required`, their arguments by the schema).
@Suite("tool calling")
struct ToolCallingTests {
    static let add = Tool(
        name: "add", description: "Adds two small integers.",
        parameters: #"{"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}, "y": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["x", "y"], "additionalProperties": false}"#)

    @Test("calls arrive typed, before .done, and valid for the schema")
    func callsAreTypedEvents() async throws {
        let chat = try await Fixtures.model().newSession(history: [], tools: [Self.add])
        var events: [GenerationEvent] = []
        for try await event in chat.events(message: "Add 2 and 3", params: GenerationParams(seed: 7, toolChoice: .required)) {
            events.append(event)
        }
        guard case .done(let stats) = events.last, case .toolCalls(let calls) = events.dropLast().last else {
            Issue.record("expected .toolCalls then .done, got \(events)")
            return
        }
        #expect(stats.stopReason == .toolCalls && stats.toolCalls == calls)
        for call in calls {
            #expect(call.name == "add")
            let args = try JSONSerialization.jsonObject(with: Data(call.arguments.utf8)) as? [String: Int]
            #expect(args.map { Set($0.keys) == ["x", "y"] && $0.values.allSatisfy { (0...9).contains($0) } } == true, "\(call.arguments)")
        }
        #expect(chat.history().last?.toolCalls == calls)
    }

    @Test("bad tools and unmatched results are InvalidParameter")
    func badToolsAreTypedErrors() async throws {
        let model = try await Fixtures.model()
        let bad = Tool(name: "has space", description: "", parameters: "{}")
        await #expect(throws: LlmError.self) { try await model.newSession(history: [], tools: [bad]) }
        do {
            _ = try await model.newSession(history: [], tools: [Tool(name: "a", description: "", parameters: #"{"type": "string"}"#)])
            Issue.record("a non-object schema was accepted")
        } catch LlmError.invalidParameter(let name, let reason) {
            #expect(name == "tools" && reason.contains("object"), "\(reason)")
        }
        let chat = try await model.newSession(history: [], tools: [Self.add])
        do {
            for try await _ in chat.events(toolResults: ["3"]) {}
            Issue.record("results without calls were accepted")
        } catch LlmError.invalidParameter(let name, _) {
            #expect(name == "results")
        }
    }
}
