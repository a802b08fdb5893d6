import Foundation
@_exported import PhiMobileCore

// The idiomatic Swift layer over the generated bindings: async loading and
// `AsyncThrowingStream`s of text. The generated calls block their thread for
// the whole generation, so every call here runs on a thread of its own, never
// on the caller's executor (and never on the cooperative thread pool, which a
// multi-second blocking call would starve).

/// One event of a streamed generation.
///
/// ```swift
/// for try await event in model.events(prompt: "Once upon a time", params: GenerationParams(maxTokens: 16)) {
///     switch event {
///     case .text(let piece): print(piece, terminator: "")
///     case .toolCalls(let calls): print(calls.map(\.name))
///     case .done(let stats): print("\n\(stats.decodeTokensPerSecond) tokens/s")
///     }
/// }
/// ```
public enum GenerationEvent: Sendable, Equatable {
    /// The text added since the previous event (whole characters only).
    case text(String)
    /// The answer called tools (a session with tools only), just before
    /// `.done`: run them and answer with ``ChatSession/events(toolResults:params:cancel:)``.
    case toolCalls([ToolCall])
    /// Generation ended: the last event of every stream that was not
    /// cancelled. `stats.text` is the concatenation of all `.text` pieces.
    case done(GenerationResult)
}

/// The library's sentence (its Rust `Display`, the generated `description`)
/// is what `localizedDescription` and string interpolation show.
extension LlmError: LocalizedError, CustomStringConvertible {
    public var errorDescription: String? { description }
}

extension GenerationParams {
    /// Deterministic argmax decoding (temperature 0, no repeat penalty), as
    /// `GenerationParams::greedy` in Rust.
    public static func greedy(maxTokens: Int32) -> GenerationParams {
        GenerationParams(maxTokens: maxTokens, temperature: 0, repeatPenalty: 1.0)
    }
}

/// Reads a model's tokenizer and chat format from the GGUF's header (or the
/// Hugging Face `tokenizer.json` at `tokenizerPath`) on a thread of its own,
/// without its weights: count a prompt's tokens before loading, or without
/// loading the model at all. A vocabulary-only GGUF will do. (Kotlin's
/// `loadTokenizer` too; the blocking call is `ModelTokenizer.load`.)
///
/// - Throws: `LlmError`, as `LanguageModel.load(config:progress:)`.
public func loadTokenizer(modelPath: String, tokenizerPath: String? = nil) async throws -> ModelTokenizer {
    try await runBlocking { try ModelTokenizer.load(modelPath: modelPath, tokenizerPath: tokenizerPath) }
}

extension LanguageModel {
    /// Loads a GGUF model on a background thread.
    ///
    /// - Parameters:
    ///   - config: the model file, tokenizer and limits.
    ///   - progress: called on the loading thread with bytes done so far and
    ///     the file size.
    /// - Throws: `LlmError` (`ModelNotFound`, `InvalidModel`,
    ///   `UnsupportedArchitecture`, `Tokenizer`, `InvalidParameter`);
    ///   `CancellationError` when the task was cancelled.
    ///
    /// Cancelling the calling task stops the load at its next progress point
    /// (a mapped file's next tensor, a read file's next 1 %).
    public static func load(
        config: ModelConfig,
        progress: (@Sendable (_ bytesDone: Int64, _ bytesTotal: Int64) -> Void)? = nil
    ) async throws -> LanguageModel {
        let relay = progress.map(ProgressRelay.init(report:))
        return try await stoppable { token in try LanguageModel.loadWithProgress(config: config, progress: relay, cancel: token) }
    }

    /// Completes `prompt` as raw text (no chat template), streaming events and
    /// ending with `.done(stats)`.
    ///
    /// Generation runs on its own thread. Cancelling the consuming task (or
    /// leaving the `for try await` loop) stops it within one token; the stream
    /// then simply ends. Errors are `LlmError`s.
    public func events(prompt: String, params: GenerationParams = GenerationParams()) -> AsyncThrowingStream<GenerationEvent, Error> {
        events(prompt: prompt, params: params, state: GenerationState())
    }

    /// Completes `prompt` as raw text, streaming the text pieces. Use
    /// ``events(prompt:params:)`` to also get the final `GenerationResult`.
    public func stream(prompt: String, params: GenerationParams = GenerationParams()) -> AsyncThrowingStream<String, Error> {
        let token = CancellationToken()
        return generationStream(state: GenerationState(), element: GenerationEvent.textPiece, cancelAction: { token.cancel() }) { sink in
            try self.generate(prompt: prompt, params: params, sink: sink, cancel: token)
        }
    }

    func events(prompt: String, params: GenerationParams, state: GenerationState) -> AsyncThrowingStream<GenerationEvent, Error> {
        let token = CancellationToken()
        return generationStream(state: state, element: { $0 }, cancelAction: { token.cancel() }) { sink in
            try self.generate(prompt: prompt, params: params, sink: sink, cancel: token)
        }
    }

    /// A chat session whose turns may call `tools`, made on a thread of its
    /// own (it compiles the tools' schemas; the first time also indexes the
    /// vocabulary, about 0.1 s). A turn that calls tools streams
    /// `.toolCalls` before `.done` (stop reason `.toolCalls`); the app runs
    /// them and answers with ``ChatSession/events(toolResults:params:cancel:)``.
    /// The library never runs a tool.
    ///
    /// ```swift
    /// let weather = Tool(name: "get_weather", description: "The weather in a city now.",
    ///                    parameters: #"{"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"], "additionalProperties": false}"#)
    /// let chat = try await model.newSession(history: [], tools: [weather])
    /// var calls: [ToolCall] = []
    /// for try await event in chat.events(message: "Weather in Paris?", params: GenerationParams(toolChoice: .required)) {
    ///     if case .toolCalls(let made) = event { calls = made }
    /// }
    /// let results = calls.map { _ in #"{"temperature": 21}"# } // run each tool here
    /// for try await piece in chat.stream(toolResults: results, params: GenerationParams(maxTokens: 32)) { print(piece) }
    /// ```
    ///
    /// - Throws: `LlmError.invalidParameter` (name "tools") for a bad name,
    ///   a duplicate, or a schema that is not a JSON object or does not
    ///   compile.
    public func newSession(history: [ChatMessage], tools: [Tool]) async throws -> ChatSession {
        try await runBlocking { try self.newSessionWithTools(history: history, tools: tools) }
    }

    /// Brings back a chat that ``ChatSession/save(to:)`` wrote, with its KV
    /// cache, on a thread of its own: the next turn does not run the history
    /// through the model again, and answers as the chat that never stopped.
    ///
    /// ```swift
    /// let chat = (try? await model.restoreSession(from: chatFile)) ?? model.newSession(history: [])
    /// ```
    ///
    /// - Parameter url: a file URL.
    /// - Throws: `LlmError.invalidSavedChat` (no file there, saved by another
    ///   model, tokenizer or template, truncated or corrupt: start a new
    ///   chat), `.storage` (the OS refused to read it).
    ///
    /// Restoring is not cancellable: it runs to completion even if the
    /// calling task is cancelled.
    public func restoreSession(from url: URL) async throws -> ChatSession {
        try await runBlocking { try self.restoreSession(path: url.path) }
    }
}

extension ChatSession {
    /// Sends a user message and streams the answer's text pieces.
    ///
    /// ```swift
    /// let model = try await LanguageModel.load(config: ModelConfig(modelPath: modelPath, tokenizerPath: tokenizerPath))
    /// let chat = model.newSession(history: [ChatMessage(role: .system, content: "Be brief.")])
    /// var answer = ""
    /// for try await piece in chat.stream(message: "Write a haiku about ice hockey", params: GenerationParams(maxTokens: 48)) {
    ///     answer += piece // show it in the UI as it arrives
    /// }
    /// print(answer, chat.history().count) // the turn is in the history: 3 messages
    /// ```
    ///
    /// Generation runs on its own thread. Cancelling the consuming task (or
    /// leaving the `for try await` loop) stops it within one token and ends
    /// the stream. Use ``events(message:params:)`` to also get the final
    /// `GenerationResult`.
    public func stream(
        message: String, params: GenerationParams = GenerationParams(), cancel: CancellationToken? = nil
    ) -> AsyncThrowingStream<String, Error> {
        let token = cancel ?? CancellationToken()
        return generationStream(state: GenerationState(), element: GenerationEvent.textPiece, cancelAction: { token.cancel() }) { sink in
            try self.send(message: message, params: params, sink: sink, cancel: token)
        }
    }

    /// Sends a user message and streams the answer as events, ending with
    /// `.done(stats)`.
    ///
    /// Generation runs on its own thread. Cancelling the consuming task (or
    /// leaving the `for try await` loop) stops it within one token and ends
    /// the stream; `cancel` (a token the caller keeps), cancelled from
    /// anywhere and at any time — also before the turn has started — stops
    /// it too, and the stream then ends with `.done` and stop reason
    /// `.cancelled`. One turn at a time per session: a second turn waits for
    /// the first. Errors are `LlmError`s.
    public func events(
        message: String, params: GenerationParams = GenerationParams(), cancel: CancellationToken? = nil
    ) -> AsyncThrowingStream<GenerationEvent, Error> {
        events(message: message, params: params, state: GenerationState(), cancel: cancel)
    }

    func events(
        message: String, params: GenerationParams, state: GenerationState, cancel: CancellationToken? = nil
    ) -> AsyncThrowingStream<GenerationEvent, Error> {
        let token = cancel ?? CancellationToken()
        return generationStream(state: state, element: { $0 }, cancelAction: { token.cancel() }) { sink in
            try self.send(message: message, params: params, sink: sink, cancel: token)
        }
    }

    /// Answers the last turn's tool calls with their `results` (one per call,
    /// in call order) and streams the next answer as events (which may call
    /// tools again), as ``events(message:params:cancel:)``.
    ///
    /// - Throws: `LlmError.invalidParameter` (name "results") when the count
    ///   does not match the calls, or the last answer called no tool.
    public func events(
        toolResults results: [String], params: GenerationParams = GenerationParams(), cancel: CancellationToken? = nil
    ) -> AsyncThrowingStream<GenerationEvent, Error> {
        let token = cancel ?? CancellationToken()
        return generationStream(state: GenerationState(), element: { $0 }, cancelAction: { token.cancel() }) { sink in
            try self.sendToolResults(results: results, params: params, sink: sink, cancel: token)
        }
    }

    /// ``events(toolResults:params:cancel:)``'s text pieces.
    public func stream(
        toolResults results: [String], params: GenerationParams = GenerationParams(), cancel: CancellationToken? = nil
    ) -> AsyncThrowingStream<String, Error> {
        let token = cancel ?? CancellationToken()
        return generationStream(state: GenerationState(), element: GenerationEvent.textPiece, cancelAction: { token.cancel() }) { sink in
            try self.sendToolResults(results: results, params: params, sink: sink, cancel: token)
        }
    }

    /// Sends a user message and returns the whole answer once it is complete
    /// (no streaming; with `params.responseFormat`, in that format), on a
    /// thread of its own. Cancelling the calling task stops generation within
    /// one token and throws `CancellationError`. The turn is in the history
    /// either way. The blocking call is `answer(message:params:cancel:)`.
    ///
    /// - Throws: `LlmError.incompleteAnswer` (with the partial text) when the
    ///   answer was cut short by `maxTokens` or a full context,
    ///   `LlmError.invalidParameter` for a format that does not compile.
    public func respond(to message: String, params: GenerationParams = GenerationParams()) async throws -> String {
        let token = CancellationToken()
        return try await withTaskCancellationHandler {
            do {
                return try await runBlocking { try self.answer(message: message, params: params, cancel: token) }
            } catch LlmError.cancelled where Task.isCancelled {
                throw CancellationError()
            }
        } onCancel: {
            token.cancel()
        }
    }

    /// Sends a user message and decodes the answer as `type`: the answer is
    /// guaranteed to be JSON valid for `schema` (a JSON Schema document), so
    /// a `Decodable` that mirrors the schema decodes it.
    ///
    /// ```swift
    /// struct Person: Decodable { let name: String; let age: Int }
    /// let person = try await chat.respond(to: "Describe a person", generating: Person.self, schema: personSchema)
    /// ```
    ///
    /// - Throws: as ``respond(to:params:)``; the decoder's `DecodingError`
    ///   as is.
    public func respond<T: Decodable>(
        to message: String, generating type: T.Type, schema: String,
        params: GenerationParams = GenerationParams(), decoder: JSONDecoder = JSONDecoder()
    ) async throws -> T {
        var constrained = params
        constrained.responseFormat = .jsonSchema(schema: schema)
        let text = try await respond(to: message, params: constrained)
        return try decoder.decode(T.self, from: Data(text.utf8))
    }

    /// Writes the conversation and its KV cache to `url` on a thread of its
    /// own, for ``LanguageModel/restoreSession(from:)`` after the app is killed. The
    /// file there is replaced only once the new one is complete, so a kill
    /// mid-save leaves the previous chat (or none), never half of one.
    ///
    /// ```swift
    /// for try await piece in chat.stream(message: "Hello", params: GenerationParams(maxTokens: 48)) { answer += piece }
    /// try await chat.save(to: chatFile) // after every turn: the app may be killed at any time
    /// ```
    ///
    /// Waits for a turn in progress to end, then saves it too. The file takes
    /// about `ModelInfo.kvBytesPerToken` bytes per token of the conversation.
    ///
    /// - Parameter url: a file URL; its directory must exist.
    /// - Throws: `LlmError.storage` (no such directory, no permission, disk
    ///   full).
    ///
    /// Saving is not cancellable: it runs to completion even if the calling
    /// task is cancelled.
    public func save(to url: URL) async throws {
        try await runBlocking { try self.save(path: url.path) }
    }
}

/// Downloads a model file from a Hugging Face repo (or the mirror in
/// `request.endpoint`) into `directory` on a thread of its own. The result
/// says where the file is (`path`), its size and commit, and whether its
/// content was checked against the Hub's hash (`verified`; `sha256` for LFS
/// files).
///
/// ```swift
/// let model = try await downloadModel(
///     DownloadRequest(repoId: "microsoft/Phi-3-mini-4k-instruct-gguf", filename: "Phi-3-mini-4k-instruct-q4.gguf"),
///     to: modelsDirectory.path
/// ) { done, total in print("\(done) / \(total)") }
/// ```
///
/// Returns at once, without network, if an earlier call already downloaded
/// it. An interrupted download resumes where it stopped, within this call or
/// the next. The file appears only once complete and checked; a server's
/// answer is never trusted to name paths, sizes or hosts (see the README).
/// Cancelling the calling task stops the transfer within about 20 ms, even on
/// a stalled connection, and throws `CancellationError`; the partial file
/// stays for the next call.
///
/// - Parameter progress: called with bytes done and total bytes on the
///   downloading thread, at most about 20 times a second.
/// - Throws: `LlmError.network` (retry later; also a stall longer than
///   `request.readTimeoutMs`), `.modelNotFound` (no such repo, file or
///   revision), `.accessDenied` (a gated or private repo: set
///   `request.token`), `.busy` (the same file is already downloading),
///   `.storage` (disk full, no permission), `.invalidParameter`;
///   `CancellationError` when the task was cancelled.
public func downloadModel(
    _ request: DownloadRequest,
    to directory: String,
    progress: (@Sendable (_ bytesDone: Int64, _ bytesTotal: Int64) -> Void)? = nil
) async throws -> DownloadedModel {
    let relay = progress.map(ProgressRelay.init(report:))
    return try await stoppable { token in
        try PhiMobileCore.downloadModel(request: request, directory: directory, progress: relay, cancel: token)
    }
}

/// Runs blocking `call` (a load or a download) on a thread of its own with a
/// token that the calling task's cancellation triggers; the `Cancelled` it
/// then throws becomes `CancellationError`.
func stoppable<T: Sendable>(_ call: @escaping @Sendable (CancellationToken) throws -> T) async throws -> T {
    let token = CancellationToken()
    do {
        return try await withTaskCancellationHandler {
            try await runBlocking { try call(token) }
        } onCancel: {
            token.cancel()
        }
    } catch LlmError.cancelled where Task.isCancelled {
        throw CancellationError()
    }
}

/// A load's or a download's progress closure as the library calls it (the
/// two callbacks have one signature).
final class ProgressRelay: LoadProgress, DownloadProgress {
    let report: @Sendable (Int64, Int64) -> Void

    init(report: @escaping @Sendable (Int64, Int64) -> Void) {
        self.report = report
    }

    func onProgress(bytesDone: Int64, bytesTotal: Int64) throws -> Bool {
        report(bytesDone, bytesTotal)
        return true
    }
}

extension GenerationEvent {
    @Sendable static func textPiece(_ event: GenerationEvent) -> String? {
        if case .text(let piece) = event { return piece }
        return nil
    }
}

// MARK: - Machinery

/// Runs `body` on a new thread with a stack as large as a Rust main thread's:
/// the tokenizer's regexes and the model code run on the calling thread, and
/// Apple's default for secondary threads (512 KiB) is small for them.
func runOnOwnThread(_ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = "phi-mobile"
    thread.stackSize = 8 << 20
    thread.start()
}

/// Runs a blocking generated call on a thread of its own and returns (or
/// throws) what it did.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
        runOnOwnThread { continuation.resume(with: Result { try body() }) }
    }
}

/// The shared state of one streamed generation: the cancellation flag the
/// sink checks, and (for tests and diagnostics) what happened.
final class GenerationState: @unchecked Sendable {
    // All fields are guarded by `lock`.
    private let lock = NSLock()
    private var cancelled = false
    private var running = false
    private var sinkCalls = 0
    private var sinkCallsAtCancel: Int?
    private var outcome: Result<GenerationResult, Error>?
    private var waiters: [CheckedContinuation<Result<GenerationResult, Error>, Never>] = []

    /// Marks the generation cancelled; runs `action` (e.g. the session's
    /// `cancel()`) only while the generation is still running, so it cannot
    /// hit a later turn.
    func cancel(then action: (@Sendable () -> Void)?) {
        lock.locked {
            guard !cancelled else { return }
            cancelled = true
            sinkCallsAtCancel = sinkCalls
            if running { action?() }
        }
    }

    /// Called by the sink for each piece: `false` once cancelled.
    func admitPiece() -> Bool {
        lock.locked {
            sinkCalls += 1
            return !cancelled
        }
    }

    /// `false` if cancelled before the generation started.
    func start() -> Bool {
        lock.locked {
            running = !cancelled
            return running
        }
    }

    func finish(_ result: Result<GenerationResult, Error>) {
        let waiting = lock.locked {
            running = false
            outcome = result
            defer { waiters = [] }
            return waiters
        }
        for waiter in waiting { waiter.resume(returning: result) }
    }

    /// How the generation ended, once it has (nil stats if it never started).
    func finished() async -> Result<GenerationResult, Error> {
        await withCheckedContinuation { continuation in
            let done: Result<GenerationResult, Error>? = lock.locked {
                if outcome == nil { waiters.append(continuation) }
                return outcome
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    var piecesOffered: Int { lock.locked { sinkCalls } }

    /// Sink calls after cancellation (nil if not cancelled through the stream).
    var piecesOfferedAfterCancel: Int? {
        lock.locked { sinkCallsAtCancel.map { sinkCalls - $0 } }
    }
}

extension NSLock {
    // NSLocking.withLock needs iOS 16 / macOS 13.
    func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

final class StreamSink: TokenSink {
    let state: GenerationState
    let deliver: @Sendable (String) -> Bool

    init(state: GenerationState, deliver: @escaping @Sendable (String) -> Bool) {
        self.state = state
        self.deliver = deliver
    }

    func onText(piece: String) throws -> Bool {
        state.admitPiece() && deliver(piece)
    }
}

struct NotStarted: Error {}

func generationStream<Element: Sendable>(
    state: GenerationState,
    element: @escaping @Sendable (GenerationEvent) -> Element?,
    cancelAction: (@Sendable () -> Void)?,
    run: @escaping @Sendable (TokenSink) throws -> GenerationResult
) -> AsyncThrowingStream<Element, Error> {
    AsyncThrowingStream { continuation in
        continuation.onTermination = { termination in
            if case .cancelled = termination { state.cancel(then: cancelAction) }
        }
        let sink = StreamSink(state: state) { piece in
            guard let value = element(.text(piece)) else { return true }
            if case .terminated = continuation.yield(value) { return false }
            return true
        }
        runOnOwnThread {
            guard state.start() else {
                state.finish(.failure(NotStarted()))
                continuation.finish()
                return
            }
            do {
                let stats = try run(sink)
                state.finish(.success(stats))
                if !stats.toolCalls.isEmpty, let value = element(.toolCalls(stats.toolCalls)) {
                    continuation.yield(value)
                }
                if let value = element(.done(stats)) { continuation.yield(value) }
                continuation.finish()
            } catch {
                state.finish(.failure(error))
                continuation.finish(throwing: error)
            }
        }
    }
}
