package dev.phimobile.chat

import dev.phimobile.CancellationToken
import dev.phimobile.ChatMessage
import dev.phimobile.ChatSession
import dev.phimobile.DownloadRequest
import dev.phimobile.GenerationParams
import dev.phimobile.LlmException
import dev.phimobile.LanguageModel
import dev.phimobile.ModelConfig
import dev.phimobile.Role
import dev.phimobile.downloadModel
import dev.phimobile.loadModel
import dev.phimobile.reply
import dev.phimobile.restoreSession
import dev.phimobile.save
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
import kotlinx.coroutines.SupervisorJob
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
     * Caps the context window. The KV cache grows with the chat up to it, so on a phone this is
     * the main memory knob after the model size (Phi-3-mini at its full 4096 needs 1.6 GB of
     * cache on top of the weights).
     */
    val contextLength: Int? = 2048,
    /** Compute threads; null = one per performance core. */
    val threads: Int? = null,
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
 * memory together. [close] releases everything (call it from `ViewModel.onCleared`);
 * [trimMemory] gives back the chat's spare KV-cache memory (call it from `onTrimMemory`).
 *
 * The last chat: with a [chatFile], the conversation and its KV cache are saved there after every
 * answer (on [ioDispatcher], after [ChatState.Ready] is published, one save at a time), and the
 * next model loaded goes on with it: its turns are back in the transcript (without [Turn.stats])
 * and the next answer does not run the history through the model again. A file it cannot go on
 * with (another model's, truncated, corrupt) is deleted and a new chat starts, in a recoverable
 * [ChatState.Error] that says so; a failed save is a recoverable error too. [newChat] deletes it.
 *
 * @param chatFile where the last chat is kept (e.g. `filesDir/chats/last.phichat`; the directory
 *   is created when needed); null keeps chats in memory only.
 * @param loader how a model is opened; the library's [loadModel] unless a test wants to watch.
 */
class ChatController(
    private val scope: CoroutineScope,
    private val settings: ChatSettings = ChatSettings(),
    private val chatFile: File? = null,
    private val ioDispatcher: CoroutineDispatcher = Dispatchers.IO,
    private val loader: suspend (ModelConfig, (Long, Long) -> Unit) -> LanguageModel = { config, onProgress ->
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
    private var model: LanguageModel? = null
    private var session: ChatSession? = null
    private var closed = false

    // The latest of the chat file's jobs (save, delete, reset, trim), each started after the one
    // before it: a save still writing when newChat() is called must not bring the old chat back,
    // and a turn sent after newChat() must not start before the reset. They run in a scope of
    // their own, not [scope]: the last answer's save must land even when the screen goes away
    // right after it (viewModelScope is cancelled by then).
    private var chatWork: Job? = null
    private val chatScope = CoroutineScope(SupervisorJob() + ioDispatcher)

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
                    publish(op, ChatState.Downloading(done, total, ChatState.Downloading.Source.DOWNLOAD))
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
            val before = chatWork
            job = scope.launch { generate(op, session, stop, loaded, transcript, text, before) }
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

    /**
     * Forgets the conversation (keeping the model and the system prompt), and deletes [chatFile].
     * False unless idle.
     */
    fun newChat(): Boolean {
        synchronized(lock) {
            val current = _state.value
            val loaded = when {
                current is ChatState.Ready -> current.model
                current is ChatState.Error && current.recoverable -> current.model
                else -> null
            } ?: return false
            val session = this.session ?: return false
            ++currentOp
            _state.value = ChatState.Ready(loaded, emptyList())
            // Off the caller's thread: a save in progress holds the session until it is written.
            // No file for an empty chat: a new session starts the same, and saving the reset one
            // would write out the old conversation's cache, which it keeps for reuse.
            val file = chatFile
            queueChatWork {
                try {
                    session.reset()
                } finally {
                    // Also when the session was closed meanwhile: the user asked to forget it.
                    file?.delete()
                }
            }
            return true
        }
    }

    /**
     * Gives back the KV-cache memory the chat holds beyond its conversation (call it from
     * `onTrimMemory`). Runs on [ioDispatcher], after an answer in progress; never blocks the
     * caller. The next answer grows the cache again as needed.
     */
    fun trimMemory() {
        val session = synchronized(lock) { session } ?: return
        queueChatWork { session.trim() }
    }

    /**
     * Stops everything and frees the model. Safe from any thread, also after [scope] has been
     * cancelled (as `viewModelScope` is by the time `onCleared` runs). A turn still finishing on a
     * background thread keeps the native objects alive until it returns (within one token), then
     * they are freed. The controller cannot be used afterwards.
     */
    override fun close() {
        // A save that has started finishes (the session is freed after it); one still queued
        // behind other chat work fails on the closed session and is dropped.
        val job: Job?
        val session: ChatSession?
        val model: LanguageModel?
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
        val model: LanguageModel?
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
        // Hold the model and its chat until the controller owns them: if this operation is
        // cancelled or superseded in between, `finally` closes them instead of leaving them to the GC.
        val pending = AtomicReference<LanguageModel?>(null)
        val pendingChat = AtomicReference<StartedChat?>(null)
        try {
            withContext(ioDispatcher) {
                pending.set(loader(config) { read, total ->
                    if (total > 0L) publish(op, ChatState.Loading(path, (read.toDouble() / total.toDouble()).toFloat()))
                })
            }
            val model = checkNotNull(pending.get())
            val loaded = LoadedModel(path, model.info())
            // The previous model's last save lands before the file is read.
            synchronized(lock) { chatWork }?.join()
            withContext(ioDispatcher) { pendingChat.set(startChat(model)) }
            val chat = checkNotNull(pendingChat.get())
            synchronized(lock) {
                if (currentOp != op) return
                this.model = model
                this.session = chat.session
                pending.set(null)
                pendingChat.set(null)
                _state.value = when (val dropped = chat.dropped) {
                    null -> ChatState.Ready(loaded, chat.transcript)
                    else -> ChatState.Error(restoreFailure(dropped), recoverable = true, cause = dropped, model = loaded, transcript = emptyList())
                }
            }
        } finally {
            pendingChat.getAndSet(null)?.session?.close()
            pending.getAndSet(null)?.close()
        }
    }

    /** A session to start with, the turns it already has, and why a saved chat was not used. */
    private class StartedChat(val session: ChatSession, val transcript: List<Turn>, val dropped: LlmException?)

    /** The chat saved in [chatFile] if this model can go on with it, else a new one. */
    private suspend fun startChat(model: LanguageModel): StartedChat {
        val file = chatFile
        if (file != null && file.isFile) {
            val restored = try {
                model.restoreSession(file)
            } catch (e: LlmException) {
                // InvalidSavedChat can never be restored, so it goes; a read refusal
                // (Storage) may pass, and the next save replaces the file anyway.
                if (e is LlmException.InvalidSavedChat) file.delete()
                return StartedChat(model.newSession(initialHistory()), emptyList(), e)
            }
            val turns = turnsOf(restored.history(), initialHistory())
            if (turns != null) return StartedChat(restored, turns, null)
            // Saved under another system prompt (the settings changed): going on would keep
            // the old prompt, through newChat() too.
            restored.close()
            file.delete()
        }
        return StartedChat(model.newSession(initialHistory()), emptyList(), null)
    }

    private suspend fun generate(
        op: Long,
        session: ChatSession,
        stop: CancellationToken,
        loaded: LoadedModel,
        transcript: List<Turn>,
        prompt: String,
        before: Job?,
    ) {
        // A newChat() just before this turn resets the session first.
        before?.join()
        val partial = StringBuilder()
        try {
            val stats = session.reply(prompt, settings.params, cancel = stop) { piece ->
                partial.append(piece)
                publish(op, ChatState.Generating(loaded, transcript, prompt, partial.toString()))
            }
            val turns = transcript + Turn(prompt, stats.text, TurnStats.of(stats))
            // A stopped answer is kept, so it is saved too; a superseded one is not. Queued under
            // the same lock as Ready is published: whoever sees Ready sees the save queued.
            synchronized(lock) {
                if (publish(op, ChatState.Ready(loaded, turns))) saveChat(op, session, loaded, turns)
            }
        } catch (e: CancellationException) {
            throw e
        } catch (e: Exception) {
            publish(op, ChatState.Error(describe(e), recoverable = true, cause = e, model = loaded, transcript = transcript))
        }
    }

    /**
     * Saves [session] to [chatFile] behind the chat work before it. A failure is reported only
     * while the state is still this turn's Ready: a later state must not be covered by it (the
     * next answer's save tries again).
     */
    private fun saveChat(op: Long, session: ChatSession, loaded: LoadedModel, transcript: List<Turn>) {
        val file = chatFile ?: return
        queueChatWork(onFailure = { e ->
            publish(op, ChatState.Error(saveFailure(e), recoverable = true, cause = e, model = loaded, transcript = transcript))
        }) {
            file.absoluteFile.parentFile?.mkdirs()
            session.save(file)
        }
    }

    /**
     * Runs [work] on [ioDispatcher] once the chat work queued before it has ended. A failure goes
     * to [onFailure], never to the scope (where it would crash the app).
     */
    private fun queueChatWork(onFailure: (Exception) -> Unit = {}, work: suspend () -> Unit) {
        synchronized(lock) {
            val previous = chatWork
            chatWork = chatScope.launch {
                previous?.join()
                try {
                    work()
                } catch (e: Exception) {
                    // Also a session closed meanwhile (model replaced, controller closed).
                    onFailure(e)
                }
            }
        }
    }

    /** Waits for the chat file's work asked for so far (for tests). */
    internal suspend fun awaitChatWork() {
        while (true) {
            val work = synchronized(lock) { chatWork } ?: return
            work.join()
            if (synchronized(lock) { chatWork } === work) return
        }
    }

    /** The session in use, if any (for tests). */
    internal val currentSession: ChatSession? get() = synchronized(lock) { session }

    private fun initialHistory(): List<ChatMessage> =
        settings.systemPrompt?.let { listOf(ChatMessage(Role.SYSTEM, it)) } ?: emptyList()

    /** Publishes [state] if [op] is still the current operation; says whether it was. */
    private fun publish(op: Long, state: ChatState): Boolean {
        synchronized(lock) {
            if (currentOp != op) return false
            _state.value = state
            return true
        }
    }
}

/**
 * The turns of a restored [history], which must begin with [initial] (the system prompt this
 * controller starts chats with) and go on in user/assistant pairs; null if it does not.
 */
internal fun turnsOf(history: List<ChatMessage>, initial: List<ChatMessage>): List<Turn>? {
    if (history.size < initial.size || history.subList(0, initial.size) != initial) return null
    val rest = history.subList(initial.size, history.size)
    if (rest.size % 2 != 0) return null
    return rest.chunked(2).map { (user, assistant) ->
        if (user.role != Role.USER || assistant.role != Role.ASSISTANT) return null
        Turn(user.content, assistant.content, stats = null)
    }
}

private fun restoreFailure(e: LlmException): String = when (e) {
    is LlmException.InvalidSavedChat -> describe(e)
    is LlmException.Storage -> "The last chat could not be read (${e.reason}); a new one starts."
    else -> "The last chat could not be restored (${describe(e)}); a new one starts."
}

private fun saveFailure(e: Throwable): String {
    val reason = if (e is LlmException.Storage) e.reason else describe(e)
    return "The chat could not be saved ($reason). It goes on, but will not be back after a restart."
}

/**
 * A message for the screen; the typed exception stays in [ChatState.Error.cause]. The library's
 * errors say it in its own words (`toString()` is the Rust sentence); a restore that failed is
 * about what this controller did next.
 */
internal fun describe(e: Throwable): String = when (e) {
    is LlmException.InvalidSavedChat -> "The last chat could not be restored (${e.reason}); a new one starts."
    is LlmException -> e.toString()
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
