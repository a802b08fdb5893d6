import Foundation
@_exported import PhiMobile

/// A chat with one on-device model, as a state machine a UI can drive: load
/// (or import, or download) a model, send messages, stop, reset, close.
///
/// ```swift
/// let chat = ChatController(settings: .init(systemPrompt: "Be brief."),
///                           chatFile: appSupport.appendingPathComponent("chats/last.phichat"))
/// Task { for await snapshot in await chat.updates() { render(snapshot) } }
/// await chat.load(modelAt: path) // the last chat comes back, if this model saved it
/// await chat.send("Write a haiku about ice hockey")
/// ```
///
/// With a `chatFile`, the conversation outlives the app: every finished turn
/// is saved there with its KV cache, and loading a model restores it, so the
/// next answer comes as fast as if the app had never stopped.
///
/// An actor: every operation runs off the main actor, and the model's blocking
/// calls run on threads of their own, so neither the UI nor the cooperative
/// pool waits on inference. Operations never throw; failures
/// become `.error` states. One operation runs at a time: loading a model
/// first stops whatever is running and releases the old model, so two models
/// never sit in memory together.
public actor ChatController {
    public struct Settings: Sendable {
        /// The first message of every conversation, if any.
        public var systemPrompt: String?
        public var params: GenerationParams
        /// Caps the context (and with it the KV cache, the largest allocation
        /// after the weights); nil uses the model's trained context.
        public var contextLength: Int32?
        public var threads: Int32?

        public init(systemPrompt: String? = nil, params: GenerationParams = GenerationParams(),
                    contextLength: Int32? = nil, threads: Int32? = nil) {
            self.systemPrompt = systemPrompt
            self.params = params
            self.contextLength = contextLength
            self.threads = threads
        }
    }

    public var settings: Settings
    /// The current state and conversation.
    public private(set) var snapshot = ChatSnapshot()

    // Internal (not private) so tests can check that a replaced model is released.
    private(set) var model: LanguageModel?
    private var session: ChatSession?
    private var observers: [UUID: AsyncStream<ChatSnapshot>.Continuation] = [:]
    /// The operation in progress and how to stop it.
    private var inFlight: (task: Task<Void, Never>, stop: @Sendable () -> Void)?
    /// The save to `chatFile` in progress, if any: the next save, loads,
    /// resets and close wait for it, so the file is written by one at a time
    /// and read only when complete.
    private var saving: Task<Void, Never>?

    /// Where the conversation is saved after every turn and restored from
    /// when a model is loaded (nil: nothing is saved).
    public let chatFile: URL?

    /// - Parameter chatFile: a file URL in the app's storage (e.g.
    ///   Application Support/chats/last.phichat); its directory is created
    ///   when needed.
    public init(settings: Settings = Settings(), chatFile: URL? = nil) {
        self.settings = settings
        self.chatFile = chatFile
    }

    public func update(settings: Settings) {
        self.settings = settings
    }

    /// Every snapshot from now on, starting with the current one, in order.
    /// A UI that only draws the latest passes `latestOnly: true` (a consumer
    /// slower than the token rate then skips states instead of queueing them).
    public func updates(latestOnly: Bool = false) -> AsyncStream<ChatSnapshot> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: ChatSnapshot.self, bufferingPolicy: latestOnly ? .bufferingNewest(1) : .unbounded)
        let id = UUID()
        observers[id] = continuation
        continuation.onTermination = { [weak self] _ in
            Task { await self?.removeObserver(id) }
        }
        continuation.yield(snapshot)
        return stream
    }

    private func removeObserver(_ id: UUID) {
        observers[id] = nil
    }

    /// Applies `change` and tells the observers once, however many fields changed.
    func publish(_ change: (inout ChatSnapshot) -> Void) {
        var next = snapshot
        change(&next)
        snapshot = next
        for observer in observers.values { observer.yield(next) }
    }

    func publish(_ state: ChatState) {
        publish { $0.state = state }
    }

    // MARK: - Operations

    /// Loads a GGUF model, replacing (and first releasing) any loaded one.
    /// States: `loading(0…1)`, then `ready` or `error`. The conversation in
    /// ``chatFile`` comes back if this model saved it; a file it cannot
    /// restore is deleted and a new chat starts (``ChatSnapshot/chatFileError``
    /// says why).
    public func load(modelAt path: String, tokenizerPath: String? = nil) async {
        await quiesce()
        await run(stop: nil) { controller in
            await controller.performLoad(path: path, tokenizerPath: tokenizerPath)
        }
    }

    /// Copies a model file (e.g. one picked with `fileImporter`) into
    /// `directory` (e.g. Application Support) and loads the copy. The copy
    /// runs on a thread of its own. States: `importing`, then as ``load(modelAt:tokenizerPath:)``.
    /// `stop()` abandons the import after the copy and deletes it.
    public func importModel(from source: URL, into directory: URL) async {
        await quiesce()
        let stopped = CancellationToken()
        await run(stop: { stopped.cancel() }) { controller in
            await controller.performImport(from: source, into: directory, stopped: stopped)
        }
    }

    /// Sends a user message and streams the answer into
    /// `generating(partial:)`; ends in `ready` (the turn appended to the
    /// transcript, `lastStats` set) or `error`. Returns the turn's stats, nil
    /// if no turn ran (no model; busy, since one turn runs at a time; stopped
    /// before it began) or it failed. With a ``chatFile``, returns once the
    /// turn is saved there (the state is `ready` already while it saves).
    @discardableResult
    public func send(_ message: String) async -> GenerationResult? {
        guard snapshot.canSend, let session else { return nil }
        // Synchronously, before any suspension: a second send now sees a busy chat.
        publish(.generating(partial: ""))
        let stop = CancellationToken()
        let params = settings.params
        // Stopping goes through the turn's token, not task cancellation: the
        // turn then ends normally, with stats and stop reason `.cancelled`,
        // even when the stop lands before the library has started it.
        return await run(stop: { stop.cancel() }) { controller in
            await controller.performSend(message, params: params, session: session, stop: stop)
        }
    }

    /// Stops what is running: the answer being generated (within one token;
    /// the partial answer stays in the transcript), a download, or an import.
    /// Loading itself cannot be interrupted.
    public func stop() {
        inFlight?.stop()
    }

    /// Starts the conversation over (the system prompt stays), keeping the
    /// model. The saved chat is deleted: the next start begins anew too.
    public func reset() async {
        await quiesce()
        await saving?.value
        guard let session else { return }
        let chatFile = chatFile
        let history = await offActor {
            session.reset()
            if let chatFile { try? FileManager.default.removeItem(at: chatFile) }
            return session.history()
        }
        publish {
            $0.transcript = history
            $0.lastStats = nil
            $0.state = .ready
        }
    }

    /// Stops what is running and releases the model (its memory is freed as
    /// soon as the last generation thread lets go of it). The chat file stays,
    /// for the next load.
    public func close() async {
        await quiesce()
        await saving?.value
        releaseModel()
        publish { $0 = ChatSnapshot() }
    }

    /// Releases the KV-cache memory the conversation does not fill (the room
    /// it grew ahead into, in 256-token steps), for a memory warning. The
    /// next turn grows it again, with the same answers. Waits for a turn in
    /// progress to end: ``stop()`` first ends it at once. Returns the bytes
    /// the KV cache holds afterwards (0 without a model).
    @discardableResult
    public func trimMemory() async -> Int64 {
        guard let session else { return 0 }
        return await offActor {
            session.trim()
            return session.kvCacheBytes()
        }
    }

    // MARK: - Machinery

    /// Runs `body` as the operation in flight, in a task of its own that
    /// `stop()` and `quiesce()` can reach. Stopping (or cancelling the
    /// caller) runs `stop`, or cancels that task if `stop` is nil.
    func run<T: Sendable>(
        stop: (@Sendable () -> Void)?,
        _ body: @escaping @Sendable (isolated ChatController) async -> T
    ) async -> T {
        let task = Task { await body(self) }
        let halt: @Sendable () -> Void = stop ?? { task.cancel() }
        inFlight = (Task { _ = await task.value }, halt)
        return await withTaskCancellationHandler {
            await task.value
        } onCancel: {
            halt()
        }
    }

    /// Stops the operation in flight and waits until it has ended. Loops
    /// because a concurrent caller may have started another one meanwhile.
    func quiesce() async {
        while let current = inFlight {
            current.stop()
            await current.task.value
            if inFlight?.task == current.task { inFlight = nil }
        }
    }

    /// Drops the model and its session (their memory goes with the last reference).
    private func releaseModel() {
        session = nil
        model = nil
        publish {
            $0.model = nil
            $0.modelPath = nil
            $0.transcript = []
            $0.lastStats = nil
            $0.chatFileError = nil
        }
    }

    /// The state to return to when an operation is abandoned.
    var restingState: ChatState { model == nil ? .noModel : .ready }

    func performLoad(path: String, tokenizerPath: String?) async {
        // The old model goes before the new one is read: a phone has room for
        // one. A save still running holds the old session (and so the old
        // model) and is writing the file this load may restore: it ends first.
        await saving?.value
        releaseModel()
        publish(.loading(progress: 0))
        let config = ModelConfig(modelPath: path, tokenizerPath: tokenizerPath,
                                 contextLength: settings.contextLength, threads: settings.threads)
        // Progress arrives on the loading thread; a stream keeps it in order
        // and ends before the result is read, so no update lands after `ready`.
        let (fractions, report) = AsyncStream.makeStream(of: Double.self, bufferingPolicy: .bufferingNewest(1))
        let loading = Task {
            defer { report.finish() }
            return try await LanguageModel.load(config: config) { done, total in
                report.yield(total == 0 ? 0 : min(1, Double(done) / Double(total)))
            }
        }
        for await fraction in fractions {
            publish(.loading(progress: fraction))
        }
        let loaded: LanguageModel
        do {
            loaded = try await loading.value
        } catch {
            publish(.error(Self.chatError(error)))
            return
        }
        let (newSession, restoreError) = await openSession(on: loaded)
        model = loaded
        session = newSession
        // A restored session has no turn running, so history() answers at once.
        let history = newSession.history()
        publish {
            $0.model = loaded.info()
            $0.modelPath = path
            $0.transcript = history
            $0.lastStats = nil
            $0.chatFileError = restoreError
            $0.state = .ready
        }
    }

    /// The conversation saved in `chatFile` if `model` can restore it, else a
    /// new one (and why not, if there was a file).
    private func openSession(on model: LanguageModel) async -> (ChatSession, ChatError?) {
        guard let chatFile, FileManager.default.fileExists(atPath: chatFile.path) else {
            return (model.newSession(history: initialHistory), nil)
        }
        do {
            return (try await model.restoreSession(from: chatFile), nil)
        } catch {
            let error = Self.llmError(error)
            // Another model's chat or a damaged file can never be restored:
            // deleting it keeps every later load from failing on it again.
            if case .invalidSavedChat = error { try? FileManager.default.removeItem(at: chatFile) }
            return (model.newSession(history: initialHistory), .chatNotRestored(error))
        }
    }

    /// Saves `session` to `chatFile` after any save still running. A failure
    /// is reported in `chatFileError` (while `session` is still the chat on
    /// screen), never as the chat's state: the turn itself succeeded.
    private func saveChat(_ session: ChatSession) async {
        guard let chatFile else { return }
        let previous = saving
        let task = Task {
            await previous?.value
            var failure: ChatError?
            do {
                // A directory that cannot be made fails the save below (Storage).
                await offActor {
                    try? FileManager.default.createDirectory(
                        at: chatFile.deletingLastPathComponent(), withIntermediateDirectories: true)
                }
                try await session.save(to: chatFile)
                #if canImport(Darwin)
                // Hundreds of MB of KV cache do not belong in iCloud backups;
                // the save replaced the file, so it is marked again.
                var file = chatFile
                var values = URLResourceValues()
                values.isExcludedFromBackup = true
                try? file.setResourceValues(values)
                #endif
            } catch {
                failure = .chatNotSaved(Self.llmError(error))
            }
            if session === self.session, snapshot.chatFileError != failure {
                publish { $0.chatFileError = failure }
            }
        }
        saving = task
        await task.value
    }

    private var initialHistory: [ChatMessage] {
        guard let prompt = settings.systemPrompt, !prompt.isEmpty else { return [] }
        return [ChatMessage(role: .system, content: prompt)]
    }

    private func performImport(from source: URL, into directory: URL, stopped: CancellationToken) async {
        publish(.importing(fileName: source.lastPathComponent))
        let copied: URL
        do {
            copied = try await offActorThrowing { try ModelFiles.copy(source, into: directory) }
        } catch {
            publish(.error(.file(error.localizedDescription)))
            return
        }
        if stopped.isCancelled() {
            try? FileManager.default.removeItem(at: copied)
            publish(restingState)
            return
        }
        await performLoad(path: copied.path, tokenizerPath: nil)
    }

    private func performSend(
        _ message: String, params: GenerationParams, session: ChatSession, stop: CancellationToken
    ) async -> GenerationResult? {
        var partial = ""
        var outcome: Result<GenerationResult, Error>?
        do {
            for try await event in session.events(message: message, params: params, cancel: stop) {
                switch event {
                case .text(let piece):
                    partial += piece
                    publish(.generating(partial: partial))
                case .toolCalls:
                    // The controller's sessions declare no tools.
                    break
                case .done(let stats):
                    outcome = .success(stats)
                }
            }
        } catch {
            outcome = .failure(error)
        }
        // The session's history is the transcript: a stopped turn keeps its
        // partial answer, a failed one leaves no trace.
        let history = await offActor { session.history() }
        var stats: GenerationResult?
        var failure: Error?
        switch outcome {
        case .success(let final)?: stats = final
        case .failure(let error)?: failure = error
        case nil: break
        }
        publish {
            $0.transcript = history
            if let stats { $0.lastStats = stats }
            $0.state = failure.map { .error(Self.chatError($0)) } ?? .ready
        }
        // A turn with stats is in the history (a stopped one with its partial
        // answer); a failed one changed nothing worth saving.
        if stats != nil { await saveChat(session) }
        return stats
    }

    static func chatError(_ error: Error) -> ChatError {
        if let error = error as? LlmError { return .llm(error) }
        if let error = error as? ChatError { return error }
        return .file(error.localizedDescription)
    }

    /// The generated calls throw only `LlmError`s; anything else is reported as one.
    static func llmError(_ error: Error) -> LlmError {
        error as? LlmError ?? .inference(reason: String(describing: error))
    }
}

/// Runs a blocking call on a thread of its own, never on the cooperative
/// pool, with a stack as large as a Rust main thread's: the tokenizer and the
/// model run on the calling thread, and Apple's default for secondary threads
/// (512 KiB) is small for them.
func offActor<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: body()) }
        thread.name = "phi-mobile-chat"
        thread.stackSize = 8 << 20
        thread.start()
    }
}

func offActorThrowing<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await offActor { Result { try body() } }.get()
}

/// Where imported models go and how they get there.
public enum ModelFiles {
    /// Copies `source` into `directory` under its own name, replacing an
    /// earlier copy. Blocking (a multi-GB copy takes seconds): call it off the
    /// main actor. Returns the copy's URL.
    public static func copy(_ source: URL, into directory: URL) throws -> URL {
        let fileManager = FileManager.default
        try fileManager.createDirectory(at: directory, withIntermediateDirectories: true)
        let destination = directory.appendingPathComponent(source.lastPathComponent)
        if source.standardizedFileURL == destination.standardizedFileURL { return destination }
        // Copy under a temporary name and rename: a copy cut short by the app
        // being killed never looks like a complete model.
        let partial = directory.appendingPathComponent(".\(source.lastPathComponent).partial")
        try? fileManager.removeItem(at: partial)
        try fileManager.copyItem(at: source, to: partial)
        try? fileManager.removeItem(at: destination)
        try fileManager.moveItem(at: partial, to: destination)
        #if canImport(Darwin)
        // Multi-GB files the app can fetch again do not belong in iCloud backups.
        var copy = destination
        var values = URLResourceValues()
        values.isExcludedFromBackup = true
        try? copy.setResourceValues(values)
        #endif
        return destination
    }
}
