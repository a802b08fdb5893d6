import Foundation
import Testing
@testable import PhiMobileChat

let system = ChatMessage(role: .system, content: "You are a helpful assistant.")
let greedy = ChatController.Settings(systemPrompt: system.content, params: .greedy(maxTokens: 24))
/// Long enough that a turn is still running when a test stops it (the
/// reference model's context is 512 tokens).
let long = ChatController.Settings(params: GenerationParams(maxTokens: 400, seed: 3))

// Serialized: the stop tests count tokens against a running generation, and
// two cores shared with parallel generations would blur that.
@Suite("Chat state machine", .serialized)
struct ChatControllerTests {
    @Test("loading goes noModel → loading(0…1) → ready")
    func loadStates() async throws {
        let chat = ChatController(settings: greedy)
        let recorder = await Recorder(chat)
        await chat.load(modelAt: try ChatFixtures.modelPath(), tokenizerPath: try ChatFixtures.tokenizerPath())
        try await recorder.wait { $0.state == .ready }

        let states = distinct(recorder.states)
        #expect(states.first == .noModel)
        #expect(states.last == .ready)
        let progress = states.compactMap(\.loadingProgress)
        #expect(states.dropFirst().dropLast().allSatisfy { $0.loadingProgress != nil }, "\(states)")
        #expect(progress.first == 0)
        #expect(progress.last == 1)
        #expect(zip(progress, progress.dropFirst()).allSatisfy { $0 <= $1 })

        let snapshot = await chat.snapshot
        #expect(snapshot.model?.architecture == "phi3")
        #expect(try snapshot.modelPath == ChatFixtures.modelPath())
        #expect(snapshot.transcript == [system])
        #expect(snapshot.canSend)
    }

    @Test("a turn streams into generating(partial), ends ready; its text is the stats' text")
    func sendStreamsAndEnds() async throws {
        let chat = try await ChatFixtures.loaded(greedy)
        let recorder = await Recorder(chat)
        let stats = try #require(await chat.send("Write a haiku about ice hockey."))
        try await recorder.wait { $0.state == .ready && $0.lastStats != nil }

        let states = distinct(recorder.states)
        #expect(states.first == .ready)
        #expect(states.last == .ready)
        let partials = states.dropFirst().dropLast().map(\.partial)
        #expect(partials.allSatisfy { $0 != nil }, "only generating states between ready and ready: \(states)")
        let texts = partials.compactMap { $0 }
        #expect(texts.first == "")
        #expect(zip(texts, texts.dropFirst()).allSatisfy { $1.hasPrefix($0) && $1.count > $0.count })
        #expect(texts.last == stats.text)
        #expect(!stats.text.isEmpty)
        #expect(stats.generatedTokens > 0)
        #expect(stats.timeToFirstTokenMs > 0)
        #expect(stats.decodeTokensPerSecond > 0)

        let snapshot = await chat.snapshot
        #expect(snapshot.lastStats == stats)
        #expect(snapshot.transcript == [
            system,
            ChatMessage(role: .user, content: "Write a haiku about ice hockey."),
            ChatMessage(role: .assistant, content: stats.text),
        ])
    }

    @Test("multi-turn: every turn answers as a plain session with the same history does")
    func multiTurn() async throws {
        let chat = try await ChatFixtures.loaded(greedy)
        let questions = ["What is the capital of France?", "And of Italy?", "Thanks."]
        var answers: [GenerationResult] = []
        for question in questions {
            answers.append(try #require(await chat.send(question)))
        }
        let transcript = await chat.snapshot.transcript
        #expect(transcript.count == 1 + 2 * questions.count)
        #expect(transcript.filter { $0.role == .assistant }.map(\.content) == answers.map(\.text))

        // The same conversation straight on PhiMobile gives the same answers.
        let model = try await LanguageModel.load(config: ModelConfig(modelPath: ChatFixtures.modelPath(), tokenizerPath: ChatFixtures.tokenizerPath()))
        let session = model.newSession(history: [system])
        for (question, answer) in zip(questions, answers) {
            var final: GenerationResult?
            for try await event in session.events(message: question, params: greedy.params) {
                if case .done(let stats) = event { final = stats }
            }
            #expect(final?.tokenIds == answer.tokenIds)
        }
    }

    @Test("stop() ends a running turn at once: stop reason cancelled, the partial answer kept")
    func stopDuringGeneration() async throws {
        let chat = try await ChatFixtures.loaded(long)
        let recorder = await Recorder(chat)
        let turn = Task { await chat.send("Tell me a long story.") }
        // Stop once a few pieces have arrived.
        try await recorder.wait { ($0.state.partial?.count ?? 0) >= 1 && pieces(recorder.states) >= 4 }
        let seenAtStop = pieces(recorder.states)
        let stoppedAt = Date()
        await chat.stop()
        let stats = try #require(await turn.value)
        let stopTime = Date().timeIntervalSince(stoppedAt)

        #expect(stats.stopReason == .cancelled)
        #expect(stats.generatedTokens < long.params.maxTokens / 2, "stopped early")
        #expect(stats.generatedTokens >= Int32(seenAtStop))
        // The whole 400-token answer takes over a second here; a stop ends the
        // turn at once. (That it ends within one token is the session's
        // contract, tested in Rust and in PhiMobileTests; the recorder
        // here lags the generating thread by a few pieces.)
        #expect(stopTime < 0.5, "stop took \(stopTime) s")
        let snapshot = await chat.snapshot
        #expect(snapshot.state == .ready)
        #expect(snapshot.lastStats == stats)
        #expect(snapshot.transcript.last == ChatMessage(role: .assistant, content: stats.text), "the partial answer stays")
        #expect(recorder.states.compactMap(\.partial).last == stats.text, "streamed text is the stats' text")

        // The next turn runs to its end.
        let next = try #require(await chat.send("Go on."))
        #expect(next.stopReason != .cancelled)
    }

    @Test("stop() right after send(): the turn runs and ends cancelled, consistently", arguments: 0..<5)
    func stopRightAfterSend(round: Int) async throws {
        let chat = try await ChatFixtures.loaded(long)
        let recorder = await Recorder(chat)
        let turn = Task { await chat.send("Tell me a long story.") }
        try await recorder.wait { $0.state == .generating(partial: "") }
        await chat.stop()
        let result = await turn.value
        let snapshot = await chat.snapshot
        #expect(snapshot.state == .ready)
        // The turn's token stays cancelled, so even a stop that lands before
        // the library starts the turn ends it with stats, never silently.
        let stats = try #require(result)
        #expect(stats.stopReason == .cancelled)
        #expect(stats.generatedTokens < long.params.maxTokens / 2)
        #expect((recorder.states.compactMap(\.partial).last ?? "") == stats.text)
        #expect(snapshot.transcript.map(\.role) == [.user, .assistant])
    }

    @Test("a token cancelled before the turn starts stops it; a session cancel() then does not")
    func stopBeforeTheTurnStarts() async throws {
        let model = try await LanguageModel.load(config: ModelConfig(modelPath: ChatFixtures.modelPath(), tokenizerPath: ChatFixtures.tokenizerPath()))
        // A session's cancel() is aimed at the turn in progress: one that
        // lands before the turn starts is not applied to it.
        let session = model.newSession(history: [])
        session.cancel()
        let unstopped = RecordedPieces()
        let ran = try await offActorThrowing {
            try session.send(message: "Tell me a story.", params: .greedy(maxTokens: 16),
                             sink: PieceSink(deliver: unstopped.append), cancel: nil)
        }
        #expect(ran.stopReason != .cancelled)
        #expect(ran.generatedTokens > 1)

        // The per-call token stays cancelled: the turn stops before its first token.
        let token = CancellationToken()
        token.cancel()
        let fresh = model.newSession(history: [])
        let pieces = RecordedPieces()
        let stats = try await offActorThrowing {
            try fresh.send(message: "Tell me a story.", params: .greedy(maxTokens: 16),
                           sink: PieceSink(deliver: pieces.append), cancel: token)
        }
        #expect(stats.stopReason == .cancelled)
        #expect(stats.generatedTokens == 0)
        #expect(pieces.all.isEmpty)
    }

    @Test("cancelling the task that called send() stops the turn")
    func callerCancellation() async throws {
        let chat = try await ChatFixtures.loaded(long)
        let recorder = await Recorder(chat)
        let turn = Task { await chat.send("Tell me a long story.") }
        try await recorder.wait { _ in pieces(recorder.states) >= 3 }
        turn.cancel()
        let stats = try #require(await turn.value)
        #expect(stats.stopReason == .cancelled)
        #expect(stats.generatedTokens < long.params.maxTokens)
        #expect(await chat.snapshot.state == .ready)
    }

    @Test("one turn at a time: send() while generating is refused")
    func busyRefusesSend() async throws {
        let chat = try await ChatFixtures.loaded(long)
        let recorder = await Recorder(chat)
        let turn = Task { await chat.send("Tell me a long story.") }
        try await recorder.wait { _ in pieces(recorder.states) >= 1 }
        #expect(await chat.send("Interrupting!") == nil)
        await chat.stop()
        _ = await turn.value
        let transcript = await chat.snapshot.transcript
        #expect(transcript.filter { $0.role == .user }.map(\.content) == ["Tell me a long story."])
    }

    @Test("reset() starts over with the system prompt and the same model")
    func reset() async throws {
        let chat = try await ChatFixtures.loaded(greedy)
        let first = try #require(await chat.send("Hello"))
        await chat.reset()
        let snapshot = await chat.snapshot
        #expect(snapshot.transcript == [system])
        #expect(snapshot.lastStats == nil)
        #expect(snapshot.state == .ready)
        // The same first turn again, from a clean cache: the same answer.
        let again = try #require(await chat.send("Hello"))
        #expect(again.tokenIds == first.tokenIds)
        #expect(again.cachedPromptTokens < first.promptTokens)
    }

    @Test("a missing model file is error(.llm(.modelNotFound))")
    func missingModel() async throws {
        let chat = ChatController()
        await chat.load(modelAt: "/nonexistent/model.gguf", tokenizerPath: try ChatFixtures.tokenizerPath())
        let snapshot = await chat.snapshot
        #expect(snapshot.state == .error(.llm(.modelNotFound(what: "/nonexistent/model.gguf"))))
        #expect(snapshot.model == nil)
        #expect(!snapshot.canSend)
        #expect(await chat.send("Hello") == nil)
    }

    @Test("a corrupt model file is error(.llm(.invalidModel)); the old model is gone, a good file loads")
    func corruptModel() async throws {
        let chat = try await ChatFixtures.loaded(greedy)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: ChatFixtures.modelPath()))
        let truncated = try ChatFixtures.directory("corrupt").appendingPathComponent("truncated.gguf")
        try bytes.prefix(bytes.count / 2).write(to: truncated)

        await chat.load(modelAt: truncated.path, tokenizerPath: try ChatFixtures.tokenizerPath())
        let snapshot = await chat.snapshot
        guard case .error(.llm(.invalidModel(let reason))) = snapshot.state else {
            Issue.record("expected InvalidModel, got \(snapshot.state)")
            return
        }
        #expect(!reason.isEmpty)
        #expect(snapshot.model == nil, "loading released the previous model first")
        #expect(await chat.model == nil)
        #expect(!ChatError.llm(.invalidModel(reason: reason)).message.isEmpty)

        await chat.load(modelAt: try ChatFixtures.modelPath(), tokenizerPath: try ChatFixtures.tokenizerPath())
        #expect(await chat.snapshot.state == .ready)
    }

    @Test("a prompt past the context is an error state; the model stays and the chat goes on")
    func contextOverflow() async throws {
        var settings = greedy
        settings.contextLength = 32
        settings.params = .greedy(maxTokens: 4)
        let chat = try await ChatFixtures.loaded(settings)
        let longMessage = String(repeating: "ice hockey is a sport played on ice ", count: 20)
        #expect(await chat.send(longMessage) == nil)
        let snapshot = await chat.snapshot
        guard case .error(.llm(.contextOverflow(_, let available))) = snapshot.state else {
            Issue.record("expected ContextOverflow, got \(snapshot.state)")
            return
        }
        #expect(available == 32)
        #expect(snapshot.transcript == [system], "a failed turn leaves no trace")
        #expect(snapshot.canSend)
        let stats = try #require(await chat.send("Hi"))
        #expect(stats.generatedTokens > 0)
        #expect(await chat.snapshot.state == .ready)
    }

    @Test("loading another model releases the first; close() releases the model")
    func replaceAndClose() async throws {
        let chat = try await ChatFixtures.loaded(greedy)
        _ = try #require(await chat.send("Hello"))
        weak var first = await chat.model
        #expect(first != nil)

        await chat.load(modelAt: try ChatFixtures.modelPath(), tokenizerPath: try ChatFixtures.tokenizerPath())
        #expect(await released { first == nil }, "the replaced model was released")
        weak var second = await chat.model
        #expect(second != nil)
        #expect(await chat.snapshot.transcript == [system], "a new model starts a new conversation")

        await chat.close()
        #expect(await released { second == nil })
        #expect(await chat.snapshot == ChatSnapshot())
    }

    @Test("loading while a turn runs stops the turn first")
    func loadStopsGeneration() async throws {
        let chat = try await ChatFixtures.loaded(long)
        let recorder = await Recorder(chat)
        let turn = Task { await chat.send("Tell me a long story.") }
        try await recorder.wait { _ in pieces(recorder.states) >= 2 }
        await chat.load(modelAt: try ChatFixtures.modelPath(), tokenizerPath: try ChatFixtures.tokenizerPath())
        #expect(try #require(await turn.value).stopReason == .cancelled)
        #expect(await chat.snapshot.state == .ready)
        #expect(await chat.snapshot.transcript.isEmpty)
    }
}

/// Whether `isReleased` holds within a second. A model loaded a moment ago
/// can still be referenced by the exiting thread that loaded it
/// (PhiMobile's LanguageModel.load), so "released" means "released soon".
func released(_ isReleased: () -> Bool) async -> Bool {
    for _ in 0..<100 {
        if isReleased() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return isReleased()
}

/// How many text pieces the recorded states show (each piece is one
/// `generating` state with a longer partial).
func pieces(_ states: [ChatState]) -> Int {
    distinct(states).filter { ($0.partial?.isEmpty == false) }.count
}

@Suite("Importing a model file, with SmolLM2-135M-Instruct", .serialized)
struct ImportTests {
    @Test("import copies into the directory, loads the copy, and chats with the GGUF's own template")
    func importAndChat() async throws {
        let source = URL(fileURLWithPath: try ChatFixtures.smolLM2Path())
        let directory = try ChatFixtures.directory("import")
        // No system prompt: the GGUF's template supplies its default one, as in tests/smollm2.rs.
        let chat = ChatController(settings: .init(params: .greedy(maxTokens: 24)))
        let recorder = await Recorder(chat)
        await chat.importModel(from: source, into: directory)
        // The recorder gets the last snapshot a moment after importModel returns.
        try await recorder.wait { $0.state == .ready }

        let states = distinct(recorder.states)
        #expect(states.prefix(2) == [.noModel, .importing(fileName: source.lastPathComponent)])
        #expect(states.last == .ready)
        #expect(states.dropFirst(2).dropLast().allSatisfy { $0.loadingProgress != nil }, "\(states)")

        let copy = directory.appendingPathComponent(source.lastPathComponent)
        let snapshot = await chat.snapshot
        #expect(snapshot.modelPath == copy.path)
        #expect(snapshot.model?.architecture == "llama")
        let size = { (url: URL) in try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber }
        #expect(try size(copy) == size(source))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == [source.lastPathComponent],
                "no partial copy left behind")

        // tests/data/smollm2_greedy.json: llama.cpp's greedy answer begins so.
        // Its 9th token, the parameter's name, is a near tie (top-2 margin
        // 0.17) where ours may take llama.cpp's runner-up, as tests/smollm2.rs allows.
        let stats = try #require(await chat.send("Write a Python function that reverses a string."))
        #expect(["input_str", "s"].contains { stats.text.hasPrefix("```python\ndef reverse_string(\($0)):") }, "\(stats.text)")
        #expect(await chat.snapshot.transcript.last == ChatMessage(role: .assistant, content: stats.text))

        // Multi-turn on a real model, after a reset: the second turn reuses
        // the first from the KV cache (the turns of tests/smollm2.rs).
        await chat.reset()
        #expect(await chat.snapshot.transcript.isEmpty)
        let color = try #require(await chat.send("Name a color."))
        #expect(color.generatedTokens > 0)
        let another = try #require(await chat.send("And another one?"))
        #expect(another.cachedPromptTokens >= color.promptTokens, "\(another.cachedPromptTokens) < \(color.promptTokens)")
        #expect(await chat.snapshot.transcript.map(\.role) == [.user, .assistant, .user, .assistant])
        await chat.close()
    }

    @Test("importing a file that does not exist is error(.file)")
    func importMissing() async throws {
        let chat = ChatController()
        await chat.importModel(from: URL(fileURLWithPath: "/nonexistent/model.gguf"), into: try ChatFixtures.directory("missing"))
        guard case .error(.file(let reason)) = await chat.snapshot.state else {
            Issue.record("expected a file error, got \(await chat.snapshot.state)")
            return
        }
        #expect(!reason.isEmpty)
    }
}

final class RecordedPieces: @unchecked Sendable {
    private let lock = NSLock()
    private var pieces: [String] = [] // guarded by lock

    @Sendable func append(_ piece: String) {
        lock.lock()
        pieces.append(piece)
        lock.unlock()
    }

    var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return pieces
    }
}

/// Hands every piece on and never asks to stop.
final class PieceSink: TokenSink {
    let deliver: @Sendable (String) -> Void

    init(deliver: @escaping @Sendable (String) -> Void) {
        self.deliver = deliver
    }

    func onText(piece: String) throws -> Bool {
        deliver(piece)
        return true
    }
}
