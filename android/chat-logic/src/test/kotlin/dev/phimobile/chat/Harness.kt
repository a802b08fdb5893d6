package dev.phimobile.chat

import dev.phimobile.GenerationParams
import dev.phimobile.LanguageModel
import dev.phimobile.loadModel
import java.io.File
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.Executors
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout

/** Paths handed in by scripts/test-android-logic.sh as system properties. */
object Fixtures {
    private fun prop(name: String): String =
        System.getProperty(name) ?: error("system property $name is not set: run scripts/test-android-logic.sh")

    /** SmolLM2-135M-Instruct: a real model whose tokenizer and chat template are in the GGUF. */
    val smolLm2: String by lazy { prop("phimobile.smollm2") }

    /** The synthetic reference Phi-3 (random weights: it rarely ends an answer by itself). */
    val referenceModel: String by lazy { prop("phimobile.referenceModel") }
    val referenceTokenizer: String by lazy { prop("phimobile.tokenizer") }

    fun greedy(maxTokens: Int) = GenerationParams(maxTokens = maxTokens, temperature = 0f, repeatPenalty = 1f)
}

/**
 * A [ChatController] driven the way an Android screen drives it: its scope runs on one "main"
 * thread, public calls are made on that thread, and every state it publishes is recorded.
 * Models are opened by the library's real [loadModel]; [loaded] keeps them so tests can check
 * they were closed.
 */
class Harness(settings: ChatSettings, chatFile: File? = null) : AutoCloseable {
    private val mainExecutor = Executors.newSingleThreadExecutor { r -> Thread(r, MAIN_THREAD).apply { isDaemon = true } }
    val main = mainExecutor.asCoroutineDispatcher()
    val scope = CoroutineScope(SupervisorJob() + main)
    val loaded = CopyOnWriteArrayList<LanguageModel>()
    val loaderThreads = CopyOnWriteArrayList<String>()
    val controller = ChatController(scope, settings, chatFile, loader = { config, onProgress ->
        loaderThreads += Thread.currentThread().name
        loadModel(config, onProgress).also { loaded += it }
    })

    /** Every state, in order. Unconfined: recorded on the publishing thread, before it goes on. */
    val states = CopyOnWriteArrayList<ChatState>()

    init {
        scope.launch(Dispatchers.Unconfined) { controller.state.collect { states += it } }
    }

    /** Runs [block] on the main thread, as UI code would. */
    fun <T> onMain(block: ChatController.() -> T): T = runBlocking { withContext(main) { controller.block() } }

    /** Waits (off the main thread) for a state that satisfies [predicate]. */
    fun await(timeout: Duration = 60.seconds, predicate: (ChatState) -> Boolean): ChatState =
        runBlocking { withTimeout(timeout) { controller.state.first(predicate) } }

    inline fun <reified S : ChatState> awaitState(timeout: Duration = 60.seconds, crossinline predicate: (S) -> Boolean = { true }): S =
        await(timeout) { it is S && predicate(it) } as S

    /** Sends [message] on the main thread and waits for the transcript to have [turns] turns. */
    fun turn(message: String, turns: Int): ChatState.Ready {
        check(onMain { send(message) }) { "send refused in ${controller.state.value}" }
        return awaitState { it.transcript.size == turns }
    }

    /** Waits for the chat file's saves, deletes and trims asked for so far. */
    fun awaitChatWork() = runBlocking { controller.awaitChatWork() }

    /** The states' kinds with repeats collapsed, e.g. [NoModel, Loading, Ready]. */
    fun kinds(): List<String> = states.map { it.javaClass.simpleName }.fold(mutableListOf()) { acc, k ->
        if (acc.lastOrNull() != k) acc += k
        acc
    }

    override fun close() {
        controller.close()
        scope.cancel()
        mainExecutor.shutdown()
    }

    companion object {
        const val MAIN_THREAD = "test-main"
    }
}
