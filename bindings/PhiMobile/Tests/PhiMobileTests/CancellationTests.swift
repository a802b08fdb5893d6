import Foundation
import Testing
@testable import PhiMobile

/// Long enough that generation is still running when the test cancels it
/// (the reference model's context is 512 tokens).
let longRun = GenerationParams(maxTokens: 480, seed: 3)

/// Consumes `events` in a task of its own, reporting the running count of text
/// pieces; returns that task and the counts.
func consume(
    _ events: AsyncThrowingStream<GenerationEvent, Error>
) -> (task: Task<(pieces: Int, stats: GenerationResult?), Error>, progress: AsyncStream<Int>) {
    let (progress, report) = AsyncStream.makeStream(of: Int.self)
    let task = Task {
        defer { report.finish() }
        var pieces = 0
        var stats: GenerationResult?
        for try await event in events {
            switch event {
            case .text:
                pieces += 1
                report.yield(pieces)
            case .toolCalls:
                break
            case .done(let final):
                stats = final
            }
        }
        return (pieces: pieces, stats: stats)
    }
    return (task, progress)
}

/// Waits until the consumer has seen `count` pieces.
func waitFor(_ count: Int, in progress: AsyncStream<Int>) async {
    for await seen in progress where seen >= count { return }
}

@Suite("Cancellation")
struct CancellationTests {
    @Test("Task.cancel() stops a one-shot generation within one token")
    func taskCancelStopsGeneration() async throws {
        let model = try await Fixtures.model()
        let state = GenerationState()
        let (consumer, progress) = consume(model.events(prompt: "Once upon a time", params: longRun, state: state))
        await waitFor(3, in: progress)
        consumer.cancel()

        let (received, done) = try await consumer.value
        #expect(done == nil, "a cancelled stream ends without .done")
        #expect(received >= 3)
        let stats = try await state.finished().get()
        #expect(stats.stopReason == .cancelled)
        #expect(stats.generatedTokens < longRun.maxTokens)
        // Once cancelled, the sink refused the next piece: no token after it.
        #expect(try #require(state.piecesOfferedAfterCancel) <= 1)

        // The model is fine afterwards.
        let (_, again) = try await collect(model.events(prompt: "Hello, world", params: .greedy(maxTokens: 32)))
        #expect(try #require(again).tokenIds == Reference.case("hello").expectedIds)
    }

    @Test("Task.cancel() stops a chat turn within one token; the session goes on")
    func taskCancelStopsChatTurn() async throws {
        let model = try await Fixtures.model()
        let chat = model.newSession(history: [])
        let state = GenerationState()
        let (consumer, progress) = consume(chat.events(message: "Tell me a long story.", params: longRun, state: state))
        await waitFor(3, in: progress)
        consumer.cancel()

        _ = try await consumer.value
        let stats = try await state.finished().get()
        #expect(stats.stopReason == .cancelled)
        #expect(try #require(state.piecesOfferedAfterCancel) <= 1)
        // The partial answer is in the history, as far as it got.
        #expect(chat.history().map(\.role) == [.user, .assistant])
        #expect(chat.history().last?.content == stats.text)

        // The next turn is not affected by the earlier cancel.
        let (text, next) = try await collect(chat.events(message: "Go on.", params: .greedy(maxTokens: 16)))
        let nextStats = try #require(next)
        #expect(nextStats.stopReason != .cancelled)
        #expect(text == nextStats.text)
        #expect(chat.history().count == 4)
    }

    @Test("leaving the for-await loop stops generation")
    func breakStopsGeneration() async throws {
        let model = try await Fixtures.model()
        let state = GenerationState()
        var pieces = 0
        for try await event in model.events(prompt: "Once upon a time", params: longRun, state: state) {
            if case .text = event { pieces += 1 }
            if pieces == 2 { break }
        }
        let stats = try await state.finished().get()
        #expect(stats.stopReason == .cancelled)
        #expect(stats.generatedTokens < longRun.maxTokens)
    }

    @Test("cancel() from another task stops the turn within one token")
    func sessionCancelFromAnotherTask() async throws {
        let model = try await Fixtures.model()
        let chat = model.newSession(history: [])
        let state = GenerationState()
        let (consumer, progress) = consume(chat.events(message: "Tell me a long story.", params: longRun, state: state))
        await waitFor(3, in: progress)
        let offeredBeforeCancel = await Task.detached {
            let offered = state.piecesOffered
            chat.cancel()
            return offered
        }.value

        let (received, done) = try await consumer.value
        let stats = try #require(done, "cancel() ends the stream with .done")
        #expect(stats.stopReason == .cancelled)
        #expect(stats.generatedTokens < longRun.maxTokens)
        // At most the token in flight, plus the decoder's held-back text.
        #expect(state.piecesOffered - offeredBeforeCancel <= 2)
        #expect(received == state.piecesOffered)

        // A cancel aimed at the earlier turn does not stop this one.
        let (_, next) = try await collect(chat.events(message: "Go on.", params: .greedy(maxTokens: 16)))
        #expect(try #require(next).stopReason != .cancelled)
    }

    @Test("a cancelled text stream stops generation too")
    func textStreamCancel() async throws {
        let model = try await Fixtures.model()
        let chat = model.newSession(history: [])
        let (progress, report) = AsyncStream.makeStream(of: Int.self)
        let consumer = Task {
            var text = ""
            var pieces = 0
            for try await piece in chat.stream(message: "Tell me a long story.", params: longRun) {
                text += piece
                pieces += 1
                report.yield(pieces)
            }
            report.finish()
            return text
        }
        await waitFor(2, in: progress)
        consumer.cancel()
        let received = try await consumer.value
        // history() waits for the turn to end: it has, and was cut short.
        let answer = try #require(chat.history().last?.content)
        #expect(answer.hasPrefix(received))
        #expect(chat.history().count == 2)
        let (_, next) = try await collect(chat.events(message: "Go on.", params: .greedy(maxTokens: 8)))
        #expect(try #require(next).stopReason != .cancelled)
    }
}
