// Hand-written Kotlin layer over the generated bindings (phi_mobile.kt, which
// scripts/generate-bindings.sh rewrites; never edit that file). Coroutines and
// Flow around the blocking UniFFI calls; no logic of its own beyond that.
package dev.phimobile

import java.io.File
import java.util.concurrent.atomic.AtomicReference
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.cancel
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.ClosedSendChannelException
import kotlinx.coroutines.channels.ProducerScope
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.channelFlow
import kotlinx.coroutines.flow.emitAll
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.transform
import kotlinx.coroutines.job
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext

/**
 * Loads a GGUF model on [Dispatchers.IO], so it can be called from the main thread.
 *
 * Close the model when done (`use {}` or [LanguageModel.close]): it holds the weights (gigabytes for
 * Phi-3-mini) until then. Sessions made from it keep the weights alive until they are closed too.
 * Using a closed model or session throws [IllegalStateException] ("... has already been destroyed").
 * Failures are the generated [LlmException] subclasses ([LlmException.ModelNotFound],
 * [LlmException.InvalidModel], [LlmException.UnsupportedArchitecture], [LlmException.Tokenizer],
 * [LlmException.InvalidParameter], ...).
 *
 * Cancelling the calling coroutine stops the load at its next progress point (a mapped file's
 * next tensor, a read file's next 1 %) and throws [CancellationException]; nothing stays loaded.
 *
 * Usage (this exact code runs in the test suite, `UsageExampleTest`):
 * ```kotlin
 * suspend fun haikus(modelPath: String, tokenizerPath: String): List<String> =
 *     loadModel(ModelConfig(modelPath = modelPath, tokenizerPath = tokenizerPath)).use { model ->
 *         val params = GenerationParams(maxTokens = 48)
 *         model.newSession(listOf(ChatMessage(Role.SYSTEM, "Be brief."))).use { chat ->
 *             // A chat turn as a Flow<String>; collecting runs generation on Dispatchers.IO.
 *             val first = chat.stream("Write a haiku about ice hockey", params).toList().joinToString("")
 *             // The suspend form streams to a callback and returns the stats.
 *             val stats = chat.reply("Another, about chess", params) { piece -> print(piece) }
 *             println("\n${stats.decodeTokensPerSecond} tokens/s, stopped by ${stats.stopReason}")
 *             // Cancelling the collector (here by a timeout) stops generation within one token.
 *             withTimeoutOrNull(50) { chat.stream("One more", params).collect { print(it) } }
 *             listOf(first, stats.text)
 *         }
 *     }
 * ```
 *
 * @param onProgress called with (bytes done, file size) as loading goes, on the loading thread.
 *   If it throws, loading stops and that exception is rethrown.
 */
suspend fun loadModel(
    config: ModelConfig,
    onProgress: ((bytesDone: Long, bytesTotal: Long) -> Unit)? = null,
): LanguageModel {
    val failure = AtomicReference<Throwable?>(null)
    val progress = onProgress?.let { relay(it, failure) }?.let { report ->
        object : LoadProgress {
            override fun onProgress(bytesDone: Long, bytesTotal: Long): Boolean = report(bytesDone, bytesTotal)
        }
    }
    val built = AtomicReference<LanguageModel?>(null)
    try {
        stoppable(failure) { token -> built.set(LanguageModel.loadWithProgress(config, progress, token)) }
    } catch (t: Throwable) {
        // Cancelled after the load finished: the model is closed, not leaked.
        built.getAndSet(null)?.close()
        throw t
    }
    return checkNotNull(built.get())
}

/**
 * A progress callback for Rust around [report]: true (go on) while [report] returns; its first
 * exception is kept in [failure] and stops the work.
 */
private fun relay(report: (Long, Long) -> Unit, failure: AtomicReference<Throwable?>): (Long, Long) -> Boolean =
    { done, total ->
        try {
            report(done, total)
            true
        } catch (t: Throwable) {
            // Keep the caller's exception itself rather than the Cancelled error it becomes.
            failure.compareAndSet(null, t)
            false
        }
    }

/**
 * Runs blocking [call] (a load or a download) on [Dispatchers.IO] with a [CancellationToken] that
 * the caller's cancellation triggers. Its `Cancelled` becomes what caused it: the progress
 * callback's exception in [failure], or the caller's [CancellationException].
 */
private suspend fun <T> stoppable(failure: AtomicReference<Throwable?>, call: (CancellationToken) -> T): T =
    CancellationToken().use { token ->
        try {
            runInterruptibly(onCancel = token::cancel) { call(token) }
        } catch (e: LlmException.Cancelled) {
            failure.get()?.let { throw it }
            currentCoroutineContext().ensureActive()
            throw e
        }
    }

/**
 * Reads a model's tokenizer and chat format from the GGUF's header (or the Hugging Face
 * `tokenizer.json` at [tokenizerPath]) on [Dispatchers.IO], without its weights: count a prompt's
 * tokens before loading, or in a process that never loads the model. A vocabulary-only GGUF will do.
 * Close it when done. Failures as in [loadModel]; if the caller is cancelled meanwhile, the
 * tokenizer is closed as soon as it is read and the cancellation is rethrown.
 */
suspend fun loadTokenizer(modelPath: String, tokenizerPath: String? = null): ModelTokenizer =
    buildOnIo { ModelTokenizer.load(modelPath, tokenizerPath) }

/**
 * Runs a blocking constructor on [Dispatchers.IO]. It cannot be interrupted: if the caller is
 * cancelled (or [build] fails) after the object was built, it is closed now rather than at GC.
 */
private suspend fun <T : AutoCloseable> buildOnIo(build: () -> T): T {
    val built = AtomicReference<T?>(null)
    try {
        withContext(Dispatchers.IO) { built.set(build()) }
    } catch (t: Throwable) {
        built.getAndSet(null)?.close()
        throw t
    }
    return checkNotNull(built.get())
}

/**
 * Downloads a model file from a Hugging Face repo (or the mirror in [DownloadRequest.endpoint])
 * into [directory] on [Dispatchers.IO]; safe to call from the main thread. The result says where
 * the file is ([DownloadedModel.file]), its size and commit, and whether its content was checked
 * against the Hub's hash ([DownloadedModel.verified]; [DownloadedModel.sha256] for LFS files).
 *
 * Returns at once, without network, if an earlier call already downloaded it. An interrupted
 * download resumes where it stopped, within this call or the next. The file appears only once
 * complete and checked; a server's answer is never trusted to name paths, sizes or hosts (see the
 * README). Cancelling the calling coroutine stops the transfer within about 20 ms, even on a
 * stalled connection, and throws [CancellationException]; the partial file stays for the next
 * call. Failures are [LlmException.Network] (retry later; also a stall longer than
 * [DownloadRequest.readTimeoutMs]), [LlmException.ModelNotFound] (no such repo, file or revision),
 * [LlmException.AccessDenied] (a gated or private repo: set [DownloadRequest.token]),
 * [LlmException.Busy] (the same file is already downloading in this process),
 * [LlmException.Storage] (disk full, no permission) and [LlmException.InvalidParameter].
 *
 * ```kotlin
 * val model = downloadModel(
 *     DownloadRequest(repoId = "microsoft/Phi-3-mini-4k-instruct-gguf", filename = "Phi-3-mini-4k-instruct-q4.gguf"),
 *     directory = File(context.filesDir, "models"),
 * ) { done, total -> progress.value = done.toFloat() / total.toFloat() }
 * loadModel(ModelConfig(modelPath = model.path))
 * ```
 *
 * @param onProgress called with (bytes done, total bytes) on the downloading thread, at most about
 *   20 times a second. If it throws, the download stops and that exception is rethrown.
 */
suspend fun downloadModel(
    request: DownloadRequest,
    directory: File,
    onProgress: ((bytesDone: Long, bytesTotal: Long) -> Unit)? = null,
): DownloadedModel {
    val failure = AtomicReference<Throwable?>(null)
    val progress = onProgress?.let { relay(it, failure) }?.let { report ->
        object : DownloadProgress {
            override fun onProgress(bytesDone: Long, bytesTotal: Long): Boolean = report(bytesDone, bytesTotal)
        }
    }
    return stoppable(failure) { token -> downloadModel(request, directory.path, progress, token) }
}

/** The downloaded file. */
val DownloadedModel.file: File get() = File(path)

/**
 * One step of a streamed generation: text pieces, then [ToolCalls] if the answer called tools,
 * then exactly one [Done] as the last event.
 */
sealed interface GenerationEvent {
    /** Text added since the previous piece (whole characters; never part of a stop string). */
    data class Text(val piece: String) : GenerationEvent

    /**
     * The answer called the session's tools (a session from [newToolSession] only), each with
     * arguments valid for the tool's schema: run them and answer with [streamToolResults].
     */
    data class ToolCalls(val calls: List<ToolCall>) : GenerationEvent

    /** The generation finished; [GenerationResult.text] is the concatenation of all [Text] pieces. */
    data class Done(val stats: GenerationResult) : GenerationEvent
}

/**
 * Completes [prompt] as raw text (no chat template): a cold [Flow] of text pieces. Each collection
 * runs one generation on [Dispatchers.IO]; cancelling the collector stops it within one token
 * (or one chunk of prompt processing), through a [CancellationToken]. Errors ([LlmException])
 * are thrown from `collect`. Use [streamEvents] or [complete] for the [GenerationResult].
 */
fun LanguageModelInterface.stream(prompt: String, params: GenerationParams = GenerationParams()): Flow<String> =
    streamEvents(prompt, params).textPieces()

/** Like [stream], ending with [GenerationEvent.Done] carrying the stats. */
fun LanguageModelInterface.streamEvents(prompt: String, params: GenerationParams = GenerationParams()): Flow<GenerationEvent> =
    flow {
        // One token per collection: a cancelled token stays cancelled.
        CancellationToken().use { token ->
            emitAll(generationEvents(onCancel = token::cancel) { sink -> generate(prompt, params, sink, token) })
        }
    }

/**
 * Completes [prompt] as raw text, calling [onText] with each piece in the caller's context, and
 * returns the stats. The blocking work runs on [Dispatchers.IO]; cancelling the caller stops it.
 * An exception thrown by [onText] stops generation and is rethrown as is.
 */
suspend fun LanguageModelInterface.complete(
    prompt: String,
    params: GenerationParams = GenerationParams(),
    onText: suspend (String) -> Unit = {},
): GenerationResult = streamEvents(prompt, params).collectStats(onText)

/**
 * Sends [message] as the next user turn and streams the answer: a cold [Flow] of text pieces.
 * Every collection sends the message again as a new turn. Generation runs on [Dispatchers.IO];
 * cancelling the collector stops it within one token (through a [CancellationToken], even before
 * the turn has started) and the session keeps the partial answer in its history. [ChatSession.cancel] from anywhere else ends the flow
 * normally (stop reason [StopReason.CANCELLED]).
 *
 * Inside `collect`, call no method of this session but [ChatSession.cancel]: the turn in progress
 * holds the session's lock while it waits for the collector, so `history()` or `send()` there
 * would wait forever.
 */
fun ChatSessionInterface.stream(message: String, params: GenerationParams = GenerationParams()): Flow<String> =
    streamEvents(message, params).textPieces()

/**
 * Like [stream], ending with [GenerationEvent.Done] carrying the stats. [cancel], if given, also
 * stops the turn (ending the flow normally with [StopReason.CANCELLED]), whenever it is cancelled:
 * before the turn starts as well as during it. The caller keeps ownership of it.
 */
fun ChatSessionInterface.streamEvents(
    message: String,
    params: GenerationParams = GenerationParams(),
    cancel: CancellationToken? = null,
): Flow<GenerationEvent> = turnEvents(cancel) { sink, token -> send(message, params, sink, token) }

/**
 * Answers the last turn's tool calls with their [results] (one per call, in call order; whatever
 * the model should read, e.g. JSON) and streams the next answer as [streamEvents] does; it may
 * call tools again. Throws [LlmException.InvalidParameter] (name "results") when the count does
 * not match the calls, or the last answer called no tool.
 * ```kotlin
 * val weather = Tool("get_weather", "The weather in a city now.",
 *     """{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}""")
 * val chat = model.newToolSession(tools = listOf(weather))
 * val calls = chat.streamEvents("Weather in Paris?").filterIsInstance<GenerationEvent.ToolCalls>()
 *     .firstOrNull()?.calls.orEmpty()
 * val results = calls.map { runMyTool(it.name, it.arguments) }
 * chat.streamToolResults(results).filterIsInstance<GenerationEvent.Text>().collect { show(it.piece) }
 * ```
 */
fun ChatSessionInterface.streamToolResults(
    results: List<String>,
    params: GenerationParams = GenerationParams(),
    cancel: CancellationToken? = null,
): Flow<GenerationEvent> = turnEvents(cancel) { sink, token -> sendToolResults(results, params, sink, token) }

/**
 * A chat session whose turns may call [tools], made on [Dispatchers.IO] (it compiles the tools'
 * schemas; the first time also indexes the vocabulary, about 0.1 s). Turns that call tools end
 * with [GenerationEvent.ToolCalls] and [StopReason.TOOL_CALLS]; the library never runs a tool.
 * Throws [LlmException.InvalidParameter] (name "tools") for a bad or duplicate name or a schema
 * that is not a JSON object or does not compile. The blocking call is
 * [LanguageModel.newSessionWithTools]. Close it when done, as any session.
 */
suspend fun LanguageModelInterface.newToolSession(history: List<ChatMessage> = emptyList(), tools: List<Tool>): ChatSession =
    withContext(Dispatchers.IO) { newSessionWithTools(history, tools) }

private fun turnEvents(
    cancel: CancellationToken?,
    call: (TokenSink, CancellationToken) -> GenerationResult,
): Flow<GenerationEvent> = flow {
    // One token per collection (a cancelled token stays cancelled), unless the caller brings one:
    // a cancel that lands before the library starts the turn still stops it.
    val own = if (cancel == null) CancellationToken() else null
    val token = cancel ?: own!!
    try {
        emitAll(generationEvents(onCancel = token::cancel) { sink -> call(sink, token) })
    } finally {
        own?.close()
    }
}

/**
 * Sends [message] and calls [onText] with each piece of the answer in the caller's context;
 * returns the stats. Cancelling the caller stops generation within one token, as does [cancel]
 * (then the stats say [StopReason.CANCELLED]). An exception thrown by [onText] stops generation
 * and is rethrown as is.
 */
suspend fun ChatSessionInterface.reply(
    message: String,
    params: GenerationParams = GenerationParams(),
    cancel: CancellationToken? = null,
    onText: suspend (String) -> Unit = {},
): GenerationResult = streamEvents(message, params, cancel).collectStats(onText)

/**
 * Sends [message] and returns the whole answer once it is complete, as [parse] reads it. With
 * [format] the text is guaranteed to be JSON valid for the schema ([ResponseFormat.JsonSchema]),
 * a JSON object ([ResponseFormat.Json]) or a match of the regex ([ResponseFormat.Regex]): ready
 * for a `kotlinx.serialization` decoder.
 * ```kotlin
 * @Serializable data class Person(val name: String, val age: Int)
 * val person = chat.respond("Describe a person", ResponseFormat.JsonSchema(personSchema)) {
 *     Json.decodeFromString<Person>(it)
 * }
 * ```
 * Failures as [respond] without a format; an exception thrown by [parse] is rethrown as is.
 */
suspend fun <T> ChatSessionInterface.respond(
    message: String,
    format: ResponseFormat,
    params: GenerationParams = GenerationParams(),
    parse: (String) -> T,
): T = parse(respond(message, params.copy(responseFormat = format)))

/**
 * Sends [message] and returns the whole answer once it is complete (no streaming; with
 * [GenerationParams.responseFormat], in that format). Runs on [Dispatchers.IO]; cancelling the
 * caller stops generation within one token and throws [CancellationException]. Throws
 * [LlmException.IncompleteAnswer] (with the partial text) when the answer was cut short by
 * [GenerationParams.maxTokens] or a full context, [LlmException.InvalidParameter] for a format
 * that does not compile. The turn is in the history either way. The blocking call is
 * [ChatSession.answer].
 */
suspend fun ChatSessionInterface.respond(message: String, params: GenerationParams = GenerationParams()): String =
    CancellationToken().use { token ->
        try {
            runInterruptibly(onCancel = token::cancel) { answer(message, params, token) }
        } catch (e: LlmException.Cancelled) {
            // Cancelled by the caller: its CancellationException, not the library's error.
            currentCoroutineContext().ensureActive()
            throw e
        }
    }

/**
 * Writes the conversation and its KV cache to [file] on [Dispatchers.IO], so it can be called
 * from the main thread; [LanguageModelInterface.restoreSession] brings it back after the app is killed.
 * The file is replaced whole: the new one is written beside it and renamed into place once
 * complete and synced, so a kill mid-save leaves the previous file (or none), never part of one.
 * Its directory must exist. About [ModelInfo.kvBytesPerToken] bytes per token of the conversation.
 *
 * Waits for a turn in progress on this session to end, and saves that turn too (so, as for
 * `history()`, never call it inside this session's [stream] collector, which that turn waits
 * for). Throws [LlmException.Storage] when the file cannot be written (no permission, disk full,
 * no such directory) and [LlmException.Busy] when called from inside this session's own
 * [TokenSink]. A save that has started is not interrupted by cancelling the caller: it
 * completes, then the cancellation is rethrown.
 */
suspend fun ChatSessionInterface.save(file: File) {
    withContext(Dispatchers.IO) { save(file.path) }
}

/**
 * A chat that [ChatSessionInterface.save] wrote to [file], with its KV cache as it was, read on
 * [Dispatchers.IO] (safe from the main thread): the next turn does not run the history through
 * the model again, and answers exactly as the chat that never stopped would. Close it when done,
 * as any session.
 *
 * Throws [LlmException.InvalidSavedChat] (delete the file and start a new chat) when there is no
 * file, or it was saved by another model (another file, tokenizer or template) or another version
 * of the format, or it is truncated or corrupt; [LlmException.Storage] when the OS refuses to read
 * it. If the caller is cancelled meanwhile, the restored session is closed and the cancellation
 * is rethrown.
 */
suspend fun LanguageModelInterface.restoreSession(file: File): ChatSession {
    val restored = AtomicReference<ChatSession?>(null)
    try {
        withContext(Dispatchers.IO) { restored.set(restoreSession(file.path)) }
    } catch (t: Throwable) {
        // Cancelled after the session was read: free its KV cache now, not at GC.
        restored.getAndSet(null)?.close()
        throw t
    }
    return checkNotNull(restored.get())
}

private fun Flow<GenerationEvent>.textPieces(): Flow<String> = transform { event ->
    if (event is GenerationEvent.Text) emit(event.piece)
}

private suspend fun Flow<GenerationEvent>.collectStats(onText: suspend (String) -> Unit): GenerationResult {
    var stats: GenerationResult? = null
    collect { event ->
        when (event) {
            is GenerationEvent.Text -> onText(event.piece)
            is GenerationEvent.ToolCalls -> {}
            is GenerationEvent.Done -> stats = event.stats
        }
    }
    return checkNotNull(stats) { "generation ended without stats" }
}

/**
 * The bridge: runs the blocking [call] on [Dispatchers.IO] with a [TokenSink] that hands each
 * piece to the collector. The channel is a rendezvous, so generation is never more than one piece
 * ahead of the collector: once the collector is gone the sink returns false at the next piece
 * (apply `.buffer(n)` to [streamEvents] to let generation run ahead instead). [onCancel], if
 * given, is called as soon as the collector is cancelled, which also stops generation during
 * prompt processing and between pieces. Collection completes only after [call] has returned, so
 * the model or session is free again when `collect` returns or its job has been joined.
 */
internal fun generationEvents(
    onCancel: (() -> Unit)?,
    call: (TokenSink) -> GenerationResult,
): Flow<GenerationEvent> = channelFlow {
    val sink = ChannelSink(this)
    val stats = runInterruptibly(onCancel) { call(sink) }
    if (stats.toolCalls.isNotEmpty()) send(GenerationEvent.ToolCalls(stats.toolCalls))
    send(GenerationEvent.Done(stats))
}.buffer(Channel.RENDEZVOUS)

private class ChannelSink(private val producer: ProducerScope<GenerationEvent>) : TokenSink {
    private val job = producer.coroutineContext.job

    // Runs on the generating thread and blocks it until the collector takes the piece. The
    // blocking send is a child of the producer, so cancelling the collector interrupts it (the
    // producer's channel itself stays open until the producer's body returns). Never throws:
    // a cancelled or closed flow just means "stop".
    override fun onText(piece: String): Boolean {
        if (!job.isActive) return false
        return try {
            runBlocking(job) {
                try {
                    producer.send(GenerationEvent.Text(piece))
                    true
                } catch (e: ClosedSendChannelException) {
                    false
                }
            }
        } catch (e: CancellationException) {
            false
        }
    }
}

/** Runs blocking [call] on [Dispatchers.IO]; if the caller is cancelled meanwhile, calls [onCancel] once. */
private suspend fun <T> runInterruptibly(onCancel: (() -> Unit)?, call: () -> T): T {
    if (onCancel == null) return withContext(Dispatchers.IO) { call() }
    return coroutineScope {
        // Guards against a late onCancel: once call() has returned, a cancel() would be
        // aimed at nothing (or at a later turn started elsewhere), so it must not happen.
        val lock = Any()
        var finished = false
        val watcher = launch(start = CoroutineStart.UNDISPATCHED) {
            try {
                awaitCancellation()
            } finally {
                synchronized(lock) {
                    // A closed session cannot be generating: nothing to stop.
                    if (!finished) runCatching(onCancel)
                }
            }
        }
        try {
            withContext(Dispatchers.IO) { call() }
        } finally {
            synchronized(lock) { finished = true }
            watcher.cancel()
        }
    }
}
