import Foundation
import Testing
import PhiMobile

/// The usage examples in PhiMobile's DocC comments, run as tests. The
/// last test checks that the documented code and the code between the
/// `doc-example` markers here are the same, so neither drifts.
@Suite("Documentation examples")
struct DocExampleTests {
    @Test("the chat example runs")
    func chatExample() async throws {
        let modelPath = try Fixtures.modelPath()
        let tokenizerPath = try Fixtures.tokenizerPath()
        // doc-example begin
        let model = try await LanguageModel.load(config: ModelConfig(modelPath: modelPath, tokenizerPath: tokenizerPath))
        let chat = model.newSession(history: [ChatMessage(role: .system, content: "Be brief.")])
        var answer = ""
        for try await piece in chat.stream(message: "Write a haiku about ice hockey", params: GenerationParams(maxTokens: 48)) {
            answer += piece // show it in the UI as it arrives
        }
        print(answer, chat.history().count) // the turn is in the history: 3 messages
        // doc-example end
        #expect(chat.history().count == 3)
        #expect(chat.history().last == ChatMessage(role: .assistant, content: answer))
    }

    @Test("the events example runs")
    func eventsExample() async throws {
        let model = try await Fixtures.model()
        // doc-example begin
        for try await event in model.events(prompt: "Once upon a time", params: GenerationParams(maxTokens: 16)) {
            switch event {
            case .text(let piece): print(piece, terminator: "")
            case .toolCalls(let calls): print(calls.map(\.name))
            case .done(let stats): print("\n\(stats.decodeTokensPerSecond) tokens/s")
            }
        }
        // doc-example end
    }

    @Test("the download example runs (cancelled before it starts: no Hub here)")
    func downloadExample() async throws {
        let modelsDirectory = URL(fileURLWithPath: try DownloadTests.directory())
        let task = Task {
            while !Task.isCancelled { await Task.yield() }
            // doc-example begin
            let model = try await downloadModel(
                DownloadRequest(repoId: "microsoft/Phi-3-mini-4k-instruct-gguf", filename: "Phi-3-mini-4k-instruct-q4.gguf"),
                to: modelsDirectory.path
            ) { done, total in print("\(done) / \(total)") }
            // doc-example end
            return model
        }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
    }

    @Test("the save and restore examples run")
    func savedChatExamples() async throws {
        let model = try await Fixtures.model()
        let chatFile = try chatDirectory("doc-example").appendingPathComponent("last.phichat")
        do {
            let chat = model.newSession(history: [])
            var answer = ""
            // doc-example begin
            for try await piece in chat.stream(message: "Hello", params: GenerationParams(maxTokens: 48)) { answer += piece }
            try await chat.save(to: chatFile) // after every turn: the app may be killed at any time
            // doc-example end
            #expect(chat.history().last == ChatMessage(role: .assistant, content: answer))
        }
        // doc-example begin
        let chat = (try? await model.restoreSession(from: chatFile)) ?? model.newSession(history: [])
        // doc-example end
        #expect(chat.history().count == 2, "restored, not new")
    }

    @Test("the structured output example runs")
    func structuredOutputExample() async throws {
        let chat = try await Fixtures.model().newSession(history: [])
        let personSchema = """
            {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
             "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"], "additionalProperties": false}
            """
        // doc-example begin
        struct Person: Decodable { let name: String; let age: Int }
        let person = try await chat.respond(to: "Describe a person", generating: Person.self, schema: personSchema)
        // doc-example end
        #expect(person.name.count <= 12 && (0...120).contains(person.age))
    }

    @Test("the tool calling example runs")
    func toolCallingExample() async throws {
        let model = try await Fixtures.model()
        // doc-example begin
        let weather = Tool(name: "get_weather", description: "The weather in a city now.",
                           parameters: #"{"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"], "additionalProperties": false}"#)
        let chat = try await model.newSession(history: [], tools: [weather])
        var calls: [ToolCall] = []
        for try await event in chat.events(message: "Weather in Paris?", params: GenerationParams(toolChoice: .required)) {
            if case .toolCalls(let made) = event { calls = made }
        }
        let results = calls.map { _ in #"{"temperature": 21}"# } // run each tool here
        for try await piece in chat.stream(toolResults: results, params: GenerationParams(maxTokens: 32)) { print(piece) }
        // doc-example end
        #expect(!calls.isEmpty && calls.allSatisfy { $0.name == "get_weather" })
        #expect(chat.history().map(\.role) == [.user, .assistant] + calls.map { _ in .tool } + [.assistant])
    }

    @Test("the documented examples are exactly the tested ones")
    func documentedEqualsTested() throws {
        let source = try String(
            contentsOf: Fixtures.repoRoot.appendingPathComponent("bindings/PhiMobile/Sources/PhiMobile/PhiMobile.swift"),
            encoding: .utf8)
        let tests = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let documented = blocks(in: source, begin: "/// ```swift", end: "/// ```", prefix: "/// ")
        let tested = blocks(in: tests, begin: "// doc-example" + " begin", end: "// doc-example" + " end", prefix: "")
        #expect(documented.count == 7)
        #expect(Set(documented) == Set(tested))
    }

    /// The lines between `begin` and `end` markers, with the markers'
    /// indentation and then `prefix` removed from each line.
    private func blocks(in text: String, begin: String, end: String, prefix: String) -> [String] {
        var result: [String] = []
        var current: [String]?
        var indent = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop { $0 == " " }
            if current == nil, trimmed == begin {
                current = []
                indent = line.count - trimmed.count
            } else if current != nil, trimmed == end {
                result.append(current!.joined(separator: "\n"))
                current = nil
            } else if current != nil {
                var body = Substring(line.dropFirst(min(indent, line.prefix { $0 == " " }.count)))
                if body.hasPrefix(prefix) { body = body.dropFirst(prefix.count) }
                current!.append(String(body))
            }
        }
        return result
    }
}
