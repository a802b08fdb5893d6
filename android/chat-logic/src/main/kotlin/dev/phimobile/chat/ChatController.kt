package dev.phimobile.chat

import dev.phimobile.CancellationToken
import dev.phimobile.ChatMessage
import dev.phimobile.ChatSession
import dev.phimobile.DownloadRequest
import dev.phimobile.GenerationParams
import dev.phimobile.LlmException
import dev.phimobile.Model
import dev.phimobile.ModelConfig
import dev.phimobile.Role
import dev.phimobile.downloadModel
import dev.phimobile.loadModel
import dev.phimobile.reply
import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.io.InputStream
import java.util.concurrent.atomic.AtomicReference
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** How the controller loads models and generates. */
data class ChatSettings(
    /** Sent as the first message of every chat (and kept by [ChatController.newChat]). */
    val systemPrompt: String? = null,
    val params: GenerationParams = GenerationParams(),
    /**
     * Caps the context window. The KV cache is allocated for the whole context on first use, so
     * on a phone this is the main memory knob after the model size (Phi-3-mini at its full 4096
     * needs gigabytes of cache on top of the weights).
     */
    val contextLength: UInt? = 2048u,
    /** Compute threads; null = one per physical core. */
    val threads: UInt? = null,
)

/**
 * The state machine behind the chat screen, with no Android dependency: choose a model (load a
 * file, copy one in, or download one), chat with it turn by turn, stop an answer, start over.
 * [state] says what to show.
 *
 * Threading: the public methods may be called from the main thread; they only update state and
 * launch work in [scope] (an Android app passes `viewModelScope`). Loading, copying and generating
 * run on [ioDispatcher] or on the library's own background dispatcher, never on the caller's
 * thread; text pieces are published from [scope]'s dispatcher.
 *
 * Memory: at most one model is loaded. Choosing a new model stops any answer in progress and
 * closes the old model *before* the new one is read, so two multi-gigabyte models are never in
 * memory together. [close] releases everything (call it from `ViewModel.onCleared`).
 *
 * @param loader how a model is opened; the library's [loadModel] unless a test wants to watch.
 */
class ChatController(
    private val scope: CoroutineScope,
    private val settings: ChatSettings = ChatSettings(),
    private val ioDispatcher: CoroutineDispatcher = Dispatchers.IO,
    private val loader: suspend (ModelConfig, (ULong, ULong) -> Unit) -> Model = { config, onProgress ->
        loadModel(config, onProgress)
    },
) : AutoCloseable {
    private val _state = MutableStateFlow<ChatState>(ChatState.NoModel)
    val state: StateFlow<ChatState> = _state.asStateFlow()

    // Everything below is guarded by `lock`. `currentOp` numbers the current operation: work of an
    // operation that has been superseded (stopped, replaced, closed) may still be winding down on
    // another thread, and must not publish over its successor's state.
    private val lock = Any()
    private var currentOp = 0L
    private var job: Job? = null
    private var model: Model? = null
    private var session: ChatSession? = null
    private var closed = false

    // Stops the answer in progress (see stop()). Small, so left to the garbage collector rather
    // than closed: a stop() racing the end of its turn may still call it.
    private var turnStop: CancellationToken? = null

    /** Loads a `.gguf` already on the device, replacing the current model. */
    fun load(path: String, tokenizerPath: String? = null) =
        replaceModel(ChatState.Loading(path, 0f)) { op -> open(op, path, tokenizerPath) }

    /**
     * Downloads a model into [directory] (Hugging Face Hub layout) and loads it. A file already
     * there loads without network; an interrupted or stopped download resumes on the next call.
     * Failures end in [ChatState.Error] with [LlmException.Network], [LlmException.Storage],
     * [LlmException.ModelNotFound], [LlmException.AccessDenied] (a gated repo needs a token) or
     * [LlmException.Busy] (already downloading).
     */
    fun download(request: DownloadRequest, directory: File) =
        replaceModel(ChatState.Downloading(0, 0, ChatState.Downloading.Source.DOWNLOAD)) { op ->
            val model = withContext(ioDispatcher) {
                downloadModel(request, directory) { done, total ->
                    publish(op, ChatState.Downloading(done.toLong(), total.toLong(), ChatState.Downloading.Source.DOWNLOAD))
                }
            }
            open(op, model.path, null)
        }

    /**
     * Copies a model into [directory] (an app's `filesDir`: the library needs a real file path,
     * which a content URI is not) and loads it. [open] is called once, on [ioDispatcher];
     * [sizeBytes] is for the progress bar (≤ 0 if unknown). The copy is written next to its target
     * and renamed only when complete, so an interrupted copy never leaves a truncated model behind.
     */
    fun importFile(displayName: String, sizeBytes: Long, directory: File, open: () -> InputStream) {
        val total = sizeBytes.coerceAtLeast(0)
        replaceModel(ChatState.Downloading(0, total, ChatState.Downloading.Source.IMPORT)) { op ->
            val target = File(directory, modelFileName(displayName))
            withContext(ioDispatcher) {
                copyModelFile(target, open) { done ->
                    publish(op, ChatState.Downloading(done, total, ChatState.Downloading.Source.IMPORT))
                }
            }
            open(op, target.path, null)
        }
    }

    /**
     * Sends [message] as the next user turn. Returns false (and does nothing) unless a model is
     * loaded and idle. The answer streams into [ChatState.Generating] and ends in
     * [ChatState.Ready] with the new [Turn] (or a recoverable [ChatState.Error]).
     */
    fun send(message: String): Boolean {
        val text = message.trim()
        if (text.isEmpty()) return false
        synchronized(lock) {
            val current = _state.value
            val loaded: LoadedModel
            val transcript: List<Turn>
            when {
                current is ChatState.Ready -> {
                    loaded = current.model
                    transcript = current.transcript
                }
                current is ChatState.Error && current.recoverable && current.model != null -> {
                    loaded = current.model
                    transcript = current.transcript
                }
                else -> return false
            }
            val session = this.session ?: return false
            val op = ++currentOp
            val stop = CancellationToken()
            turnStop = stop
            _state.value = ChatState.Generating(loaded, transcript, text, "")
            job = scope.launch { generate(op, session, stop, loaded, transcript, text) }
            return true
        }
    }

    /**
     * Stops what is in progress: an answer ends within one token and is kept in the transcript
     * (stop reason CANCELLED); a download, copy or load is abandoned (state [ChatState.NoModel]).
     */
    fun stop() {
        synchronized(lock) {
            when (_state.value) {
                // The turn's own token: it stops the turn even if the library has not started it yet.
                is ChatState.Generating -> turnStop?.cancel()
                is ChatState.Downloading, is ChatState.Loading -> {
                    ++currentOp
                    job?.cancel()
                    _state.value = ChatState.NoModel
                }
                else -> {}
            }
        }
    }

    /** Stops what is in progress and frees the model (state [ChatState.NoModel]), e.g. to pick another. */
    fun unload() = replaceModel(ChatState.NoModel) {}

    /** Forgets the conversation (keeping the model and the system prompt). False unless idle. */
    fun newChat(): Boolean {
        synchronized(lock) {
            val current = _state.value
            val loaded = when {
                current is ChatState.Ready -> current.model
                current is ChatState.Error && current.recoverable -> current.model
                else -> null
            } ?: return false
            // Idle, so no turn holds the session's lock: reset() returns at once.
            val session = this.session ?: return false
            session.reset()
            ++currentOp
            _state.value = ChatState.Ready(loaded, emptyList())
            return true
        }
    }

    /**
     * Stops everything and frees the model. Safe from any thread, also after [scope] has been
     * cancelled (as `viewModelScope` is by the time `onCleared` runs). A turn still finishing on a
     * background thread keeps the native objects alive until it returns (within one token), then
     * they are freed. The controller cannot be used afterwards.
     */
    override fun close() {
        val job: Job?
        val session: ChatSession?
        val model: Model?
        synchronized(lock) {
            if (closed) return
            closed = true
            ++currentOp
            job = this.job
            session = this.session
            model = this.model
            this.job = null
            this.session = null
            this.model = null
            _state.value = ChatState.NoModel
        }
        turnStop?.cancel()
        job?.cancel()
        session?.close()
        model?.close()
    }

    /** Starts an operation that replaces the model: stops and joins the previous one first. */
    private fun replaceModel(initial: ChatState, work: suspend (op: Long) -> Unit) {
        synchronized(lock) {
            check(!closed) { "ChatController is closed" }
            val op = ++currentOp
            val previous = job
            // An answer in progress stops within one token; a load cannot be interrupted and is
            // waited for (its model is then closed by whoever loaded it).
            turnStop?.cancel()
            previous?.cancel()
            _state.value = initial
            job = scope.launch {
                previous?.join()
                try {
                    releaseModel()
                    work(op)
                } catch (e: CancellationException) {
                    throw e
                } catch (e: Exception) {
                    publish(op, ChatState.Error(describe(e), recoverable = false, cause = e, model = null, transcript = emptyList()))
                }
            }
        }
    }

    private suspend fun releaseModel() {
        val session: ChatSession?
        val model: Model?
        synchronized(lock) {
            session = this.session
            model = this.model
            this.session = null
            this.model = null
        }
        // The session holds a reference to the weights too: both must go for the memory to.
        withContext(NonCancellable + ioDispatcher) {
            session?.close()
            model?.close()
        }
    }

    private suspend fun open(op: Long, path: String, tokenizerPath: String?) {
        publish(op, ChatState.Loading(path, 0f))
        val config = ModelConfig(
            modelPath = path,
            tokenizerPath = tokenizerPath,
            contextLength = settings.contextLength,
            threads = settings.threads,
        )
        // Holds the model until it is owned by the controller: if this operation is cancelled
        // or superseded in between, `finally` closes it instead of leaving it to the GC.
        val pending = AtomicReference<Model?>(null)
        try {
            withContext(ioDispatcher) {
                pending.set(loader(config) { read, total ->
                    if (total > 0uL) publish(op, ChatState.Loading(path, (read.toDouble() / total.toDouble()).toFloat()))
                })
            }
            val model = checkNotNull(pending.get())
            val loaded = LoadedModel(path, model.info())
            val session = model.newSession(initialHistory())
            synchronized(lock) {
                if (currentOp != op) {
                    session.close()
                    return
                }
                this.model = model
                this.session = session
                pending.set(null)
                _state.value = ChatState.Ready(loaded, emptyList())
            }
        } finally {
            pending.getAndSet(null)?.close()
        }
    }

    private suspend fun generate(
        op: Long,
        session: ChatSession,
        stop: CancellationToken,
        loaded: LoadedModel,
        transcript: List<Turn>,
        prompt: String,
    ) {
        val partial = StringBuilder()
        try {
            val stats = session.reply(prompt, settings.params, cancel = stop) { piece ->
                partial.append(piece)
                publish(op, ChatState.Generating(loaded, transcript, prompt, partial.toString()))
            }
            publish(op, ChatState.Ready(loaded, transcript + Turn(prompt, stats.text, TurnStats.of(stats))))
        } catch (e: CancellationException) {
            throw e
        } catch (e: Exception) {
            publish(op, ChatState.Error(describe(e), recoverable = true, cause = e, model = loaded, transcript = transcript))
        }
    }

    private fun initialHistory(): List<ChatMessage> =
        settings.systemPrompt?.let { listOf(ChatMessage(Role.SYSTEM, it)) } ?: emptyList()

    private fun publish(op: Long, state: ChatState) {
        synchronized(lock) {
            if (currentOp == op) _state.value = state
        }
    }
}

/** A message for the screen; the typed exception stays in [ChatState.Error.cause]. */
internal fun describe(e: Throwable): String = when (e) {
    is LlmException.ModelNotFound -> "Model not found: ${e.what}"
    is LlmException.InvalidModel -> "Not a usable model file: ${e.reason}"
    is LlmException.UnsupportedArchitecture -> "Unsupported model architecture: ${e.architecture}"
    is LlmException.Tokenizer -> "The model's tokenizer cannot be used: ${e.reason}"
    is LlmException.InvalidParameter -> "Invalid setting ${e.name}: ${e.reason}"
    is LlmException.ContextOverflow ->
        "The conversation no longer fits the context (${e.needed} tokens needed, ${e.available} available). Start a new chat."
    is LlmException.Inference -> "Generation failed: ${e.reason}"
    is LlmException.Callback -> "Generation was interrupted: ${e.reason}"
    is LlmException.Network -> "Download failed: ${e.reason}. Check the connection and try again; it resumes where it stopped."
    is LlmException.Storage -> "Cannot store the model: ${e.reason}"
    is LlmException.AccessDenied -> "Access denied: ${e.reason}"
    is LlmException.Busy -> "This model is already downloading: ${e.reason}"
    is LlmException.InvalidSavedChat -> "The last chat could not be restored (${e.reason}); a new one starts."
    is LlmException.Cancelled -> "Cancelled"
    is IOException -> "Could not store the model: ${e.message ?: e.javaClass.simpleName}"
    else -> e.message ?: e.javaClass.simpleName
}

/** A safe file name for an imported model: the display name's last path segment, or a default. */
internal fun modelFileName(displayName: String): String {
    val name = displayName.substringAfterLast('/').substringAfterLast('\\').replace('\u0000', '_').trim()
    return if (name.isEmpty() || name == "." || name == "..") "model.gguf" else name
}

/**
 * Copies [open]'s stream to [target] through a `.partial` file renamed at the end; checks for
 * cancellation between 1 MiB chunks and deletes the partial file on any failure.
 */
internal suspend fun copyModelFile(target: File, open: () -> InputStream, onProgress: (bytesDone: Long) -> Unit) {
    val directory = target.absoluteFile.parentFile
    if (!directory.isDirectory && !directory.mkdirs()) throw IOException("cannot create $directory")
    val partial = File(directory, target.name + ".partial")
    try {
        open().use { input ->
            FileOutputStream(partial).use { output ->
                val buffer = ByteArray(1 shl 20)
                var done = 0L
                while (true) {
                    currentCoroutineContext().ensureActive()
                    val n = input.read(buffer)
                    if (n < 0) break
                    output.write(buffer, 0, n)
                    done += n
                    onProgress(done)
                }
                // On disk before the rename, so a crash cannot leave a complete-looking but
                // truncated model.
                output.fd.sync()
            }
        }
        if (!partial.renameTo(target)) throw IOException("cannot rename ${partial.name} to ${target.name}")
    } finally {
        partial.delete()
    }
}
