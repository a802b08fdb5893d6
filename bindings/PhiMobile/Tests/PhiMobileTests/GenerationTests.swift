import Foundation
import Testing
@testable import PhiMobile

@Suite("Generation")
struct GenerationTests {
    @Test("greedy ids equal the Rust reference test's", arguments: ["hello", "chat", "unicode", "long"])
    func greedyIdsEqualTheReference(name: String) async throws {
        let model = try await Fixtures.model()
        let reference = try Reference.case(name)
        #expect(try model.tokenize(text: reference.prompt) == reference.promptIds)

        // As in tests/reference.rs: our loop stops at an end token, transformers' did not.
        let endTokens = try ["<|end|>", "<|endoftext|>", "</s>"].map { try #require(model.tokenize(text: $0).last) }
        let untilEnd = reference.expectedIds.firstIndex(where: endTokens.contains) ?? reference.expectedIds.count
        let params = GenerationParams.greedy(maxTokens: Int32(reference.expectedIds.count))

        let (text, final) = try await collect(model.events(prompt: reference.prompt, params: params))
        let stats = try #require(final)
        #expect(stats.tokenIds == Array(reference.expectedIds[..<untilEnd]))
        #expect(stats.stopReason == (untilEnd < reference.expectedIds.count ? .endOfSequence : .maxTokens))
        #expect(stats.generatedTokens == Int32(untilEnd))
        #expect(stats.promptTokens == Int32(reference.promptIds.count))
        #expect(text == stats.text)

        // The generated blocking API gives the same.
        let sink = RecordingSink()
        let blocking = try await offThread { try model.generate(prompt: reference.prompt, params: params, sink: sink) }
        #expect(blocking.tokenIds == stats.tokenIds)
        #expect(sink.pieces.joined() == blocking.text)
    }

    @Test("the greedy reference case is the Rust test's")
    func referenceIsTheRustOne() throws {
        let reference = try Reference.load()
        #expect(reference.generator.contains("Phi3ForCausalLM"))
        let hello = try Reference.case("hello")
        #expect(hello.prompt == "Hello, world")
        #expect(hello.expectedIds.count == 32)
    }

    @Test("stream concatenation equals the stats' text")
    func concatenationEqualsStatsText() async throws {
        let model = try await Fixtures.model()
        let params = GenerationParams(maxTokens: 80, seed: 7) // sampled, but reproducible
        let (text, final) = try await collect(model.events(prompt: "Once upon a time", params: params))
        let stats = try #require(final)
        #expect(!text.isEmpty)
        #expect(text == stats.text)
        #expect(stats.generatedTokens > 0)
        // The text-only stream delivers the same pieces.
        #expect(try await collect(model.stream(prompt: "Once upon a time", params: params)) == stats.text)

        // A chat turn: events, text stream and the history agree.
        let system = ChatMessage(role: .system, content: "You are a helpful assistant.")
        let chat = model.newSession(history: [system])
        let (answer, turn) = try await collect(chat.events(message: "Write a haiku about ice hockey.", params: params))
        let turnStats = try #require(turn)
        #expect(answer == turnStats.text)
        #expect(chat.history() == [
            system,
            ChatMessage(role: .user, content: "Write a haiku about ice hockey."),
            ChatMessage(role: .assistant, content: answer),
        ])
        let other = model.newSession(history: [system])
        #expect(try await collect(other.stream(message: "Write a haiku about ice hockey.", params: params)) == answer)
    }

    @Test("async loading reports progress up to the file size")
    func asyncLoadWithProgress() async throws {
        let seen = RecordingProgress()
        let model = try await LanguageModel.load(config: Fixtures.config()) { done, total in seen.record(done, total) }
        let size = try #require(FileManager.default.attributesOfItem(atPath: Fixtures.modelPath())[.size] as? NSNumber).int64Value
        let calls = seen.calls
        #expect(!calls.isEmpty)
        #expect(calls.last?.0 == size)
        #expect(calls.allSatisfy { $0.1 == size })
        #expect(zip(calls, calls.dropFirst()).allSatisfy { $0.0 <= $1.0 })
        #expect(model.info().architecture == "phi3")
    }

    @Test("cancelling the task stops the load at its next progress point")
    func cancelledLoad() async throws {
        let seen = RecordingProgress()
        let (firstReport, signal) = AsyncStream.makeStream(of: Void.self)
        let task = Task {
            try await LanguageModel.load(config: Fixtures.config()) { done, total in
                seen.record(done, total)
                if seen.calls.count == 1 {
                    signal.yield()
                    // Time for the cancel to reach the load's token.
                    Thread.sleep(forTimeInterval: 0.3)
                }
            }
        }
        for await _ in firstReport { break }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        // A whole load of this model reports once per tensor (more than 10 times).
        #expect(seen.calls.count == 1)
    }

    @Test("two tasks with their own sessions on one model")
    func twoSessionsOnOneModel() async throws {
        let model = try await Fixtures.model()
        let params = GenerationParams.greedy(maxTokens: 40)
        let questions = ["Write a haiku about ice hockey.", "What is the capital of France?"]

        // Each alone first.
        var alone: [[Int32]] = []
        for question in questions {
            let (_, stats) = try await collect(model.newSession(history: []).events(message: question, params: params))
            alone.append(try #require(stats).tokenIds)
        }

        // Then at the same time, twice each, on four sessions over the same weights.
        let together = try await withThrowingTaskGroup(of: (Int, [Int32], String, String).self) { group in
            for index in 0..<4 {
                group.addTask {
                    let session = model.newSession(history: [])
                    let (text, stats) = try await collect(session.events(message: questions[index % 2], params: params))
                    let final = try #require(stats)
                    return (index, final.tokenIds, text, final.text)
                }
            }
            var results: [Int: (ids: [Int32], text: String, statsText: String)] = [:]
            for try await (index, ids, text, statsText) in group { results[index] = (ids, text, statsText) }
            return results
        }
        for index in 0..<4 {
            let result = try #require(together[index])
            #expect(result.ids == alone[index % 2], "session \(index)")
            #expect(result.text == result.statsText)
        }
    }
}

final class RecordingProgress: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [(Int64, Int64)] = []

    func record(_ done: Int64, _ total: Int64) {
        lock.lock()
        recorded.append((done, total))
        lock.unlock()
    }

    var calls: [(Int64, Int64)] {
        lock.lock()
        defer { lock.unlock() }
        return recorded
    }
}
