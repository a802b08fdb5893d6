package dev.phimobile.chat

import dev.phimobile.ChatMessage
import dev.phimobile.GenerationResult
import dev.phimobile.LlmException
import dev.phimobile.ModelConfig
import dev.phimobile.Role
import dev.phimobile.loadModel
import dev.phimobile.reply
import dev.phimobile.restoreSession
import dev.phimobile.save
import java.io.File
import java.nio.file.Files
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * The last chat survives a restart: a controller given the same chat file and model shows the
 * previous turns and answers as the chat that never stopped; a file it cannot go on with is
 * deleted and a fresh chat saved in its place. SmolLM2, greedy, against the library used directly.
 */
@Timeout(180)
class SavedChatTest {
    private val params = Fixtures.greedy(20)
    private val settings = ChatSettings(systemPrompt = "Be brief.", params = params, contextLength = 1024)
    private val system = listOf(ChatMessage(Role.SYSTEM, "Be brief."))
    private val scratch: File = Files.createTempDirectory("chat-logic-saved").toFile()
    private val prompts = listOf("Name a color.", "And another one?", "Which of the two do you like more?")

    private fun smolLm2Config() = ModelConfig(modelPath = Fixtures.smolLm2, contextLength = settings.contextLength)

    /** What the library answers to [prompts] in one uninterrupted session. */
    private fun direct(prompts: List<String>): List<GenerationResult> = runBlocking {
        loadModel(smolLm2Config()).use { model ->
            model.newSession(system).use { session -> prompts.map { session.reply(it, params) } }
        }
    }

    /** The messages of the chat saved in [file], as the library restores them. */
    private fun savedHistory(file: File): List<ChatMessage> = runBlocking {
        loadModel(smolLm2Config()).use { model -> model.restoreSession(file).use { it.history() } }
    }

    private fun Harness.loadSmolLm2(): ChatState {
        onMain { load(Fixtures.smolLm2) }
        return await { it is ChatState.Ready || it is ChatState.Error }
    }

    @Test
    fun `a controller restarted with the same chat file shows the chat and answers as the uninterrupted one`() {
        val expected = direct(prompts)
        // In a directory that does not exist yet: the controller makes it.
        val file = File(scratch, "chats/last.phichat")
        val before = Harness(settings, file).use { h ->
            assertIs<ChatState.Ready>(h.loadSmolLm2())
            h.turn(prompts[0], 1)
            val ready = h.turn(prompts[1], 2)
            h.awaitChatWork()
            assertTrue(file.isFile)
            ready.transcript
        }
        assertEquals(expected.take(2).map { it.text }, before.map { it.assistant })

        Harness(settings, file).use { h ->
            val restored = assertIs<ChatState.Ready>(h.loadSmolLm2())
            assertEquals(listOf("NoModel", "Loading", "Ready"), h.kinds())
            assertEquals(before.map { it.user to it.assistant }, restored.transcript.map { it.user to it.assistant })
            assertTrue(restored.transcript.all { it.stats == null }, "restored turns have no stats")

            val next = h.turn(prompts[2], 3).transcript.last()
            assertEquals(expected[2].text, next.assistant)
            // Its history came from the restored KV cache, as far as the uninterrupted chat's did.
            val stats = assertNotNull(next.stats)
            assertEquals(expected[2].promptTokens, stats.promptTokens)
            assertEquals(expected[2].cachedPromptTokens, stats.cachedPromptTokens)
            assertTrue(stats.cachedPromptTokens > 0, "$stats")
            h.awaitChatWork()
        }
        // And saved again, with the third turn.
        val answers = expected.map { it.text }
        assertEquals(system + prompts.zip(answers).flatMap { (q, a) -> listOf(ChatMessage(Role.USER, q), ChatMessage(Role.ASSISTANT, a)) }, savedHistory(file))
        // Only the chat file is there: each save went through a temporary file renamed into place.
        assertEquals(listOf("last.phichat"), file.parentFile.list()!!.toList())
    }

    @Test
    fun `a truncated, garbage or other model's chat file is deleted and a fresh chat is saved over it`() {
        val expected = direct(prompts.take(1)).single()
        val good = File(scratch, "good.phichat")
        val foreign = File(scratch, "foreign.phichat")
        runBlocking {
            loadModel(smolLm2Config()).use { model -> model.newSession(system).use { it.reply(prompts[0], params); it.save(good) } }
            val reference = ModelConfig(modelPath = Fixtures.referenceModel, tokenizerPath = Fixtures.referenceTokenizer)
            loadModel(reference).use { model -> model.newSession(system).use { it.reply(prompts[0], Fixtures.greedy(4)); it.save(foreign) } }
        }
        val bytes = good.readBytes()
        val cases = listOf(
            Triple("truncated", bytes.copyOf(bytes.size / 2), "truncated or corrupt"),
            Triple("one byte flipped", bytes.copyOf().also { it[it.size - 100] = (it[it.size - 100].toInt() xor 1).toByte() }, "truncated or corrupt"),
            Triple("garbage", kotlin.random.Random(3).nextBytes(10_000), "not a saved chat"),
            Triple("another model's", foreign.readBytes(), "another model"),
        )
        for ((what, content, reason) in cases) {
            val file = File(scratch, "last.phichat").apply { writeBytes(content) }
            Harness(settings, file).use { h ->
                val error = assertIs<ChatState.Error>(h.loadSmolLm2(), what)
                val cause = assertIs<LlmException.InvalidSavedChat>(error.cause, what)
                assertTrue(reason in cause.reason, "$what: ${cause.reason}")
                assertTrue(error.recoverable, what)
                assertNotNull(error.model, "$what: the model is loaded")
                assertTrue(error.transcript.isEmpty(), what)
                assertTrue(error.message.startsWith("The last chat could not be restored"), error.message)
                assertEquals(listOf("NoModel", "Loading", "Error"), h.kinds(), what)
                assertFalse(file.exists(), "$what: the file is deleted")

                // The fresh chat goes on from the error and is saved in the file's place.
                val ready = h.turn(prompts[0], 1)
                assertEquals(expected.text, ready.transcript.single().assistant, what)
                h.awaitChatWork()
            }
            assertEquals(system + listOf(ChatMessage(Role.USER, prompts[0]), ChatMessage(Role.ASSISTANT, expected.text)), savedHistory(File(scratch, "last.phichat")), what)
        }
    }

    @Test
    fun `newChat deletes the chat file, and a turn sent right after it starts the new chat`() {
        val fresh = direct(prompts.drop(1).take(1)).single()
        val file = File(scratch, "new-chat.phichat")
        Harness(settings, file).use { h ->
            assertIs<ChatState.Ready>(h.loadSmolLm2())
            h.turn(prompts[0], 1)
            // Without waiting for the first turn's save: it lands before the reset, the reset
            // before the next turn, so the old chat neither comes back nor leaks into the new one.
            h.onMain {
                assertTrue(newChat())
                assertTrue(send(prompts[1]))
            }
            val ready = h.awaitState<ChatState.Ready> { it.transcript.size == 1 && it.transcript[0].user == prompts[1] }
            assertEquals(fresh.text, ready.transcript.single().assistant)
            h.awaitChatWork()
            assertEquals(system + listOf(ChatMessage(Role.USER, prompts[1]), ChatMessage(Role.ASSISTANT, fresh.text)), savedHistory(file))

            assertTrue(h.onMain { newChat() })
            h.awaitChatWork()
            assertFalse(file.exists())
        }
        Harness(settings, file).use { h ->
            val ready = assertIs<ChatState.Ready>(h.loadSmolLm2())
            assertTrue(ready.transcript.isEmpty())
        }
    }

    @Test
    fun `a chat saved under another system prompt is dropped without an error`() {
        val file = File(scratch, "other-prompt.phichat")
        Harness(settings, file).use { h ->
            assertIs<ChatState.Ready>(h.loadSmolLm2())
            h.turn(prompts[0], 1)
            h.awaitChatWork()
        }
        // Going on with it would keep "Be brief." (also through newChat()), against the settings.
        Harness(settings.copy(systemPrompt = "Answer in French."), file).use { h ->
            val ready = assertIs<ChatState.Ready>(h.loadSmolLm2())
            assertTrue(ready.transcript.isEmpty())
            assertFalse(file.exists())
            assertEquals(listOf(ChatMessage(Role.SYSTEM, "Answer in French.")), assertNotNull(h.controller.currentSession).history())
        }
    }

    @Test
    fun `a failed save is a recoverable error that keeps the chat`() {
        // A directory where the file should be: the rename into place fails.
        val file = File(scratch, "occupied.phichat").apply { mkdirs() }
        File(file, "keep").writeText("so the directory is not empty")
        Harness(settings, file).use { h ->
            assertIs<ChatState.Ready>(h.loadSmolLm2())
            assertTrue(h.onMain { send(prompts[0]) })
            val error = h.awaitState<ChatState.Error>()
            assertIs<LlmException.Storage>(error.cause)
            assertTrue(error.recoverable)
            assertTrue(error.message.startsWith("The chat could not be saved"), error.message)
            assertEquals(listOf(prompts[0]), error.transcript.map { it.user })
            // The chat goes on.
            assertTrue(h.onMain { send(prompts[1]) })
            h.awaitState<ChatState.Error> { it.transcript.size == 2 }
        }
        assertTrue(file.isDirectory)
    }

    @Test
    fun `trimMemory does not wait for the answer in progress, and the chat goes on`() {
        val file = File(scratch, "trim.phichat")
        // The synthetic Phi-3: random weights, so its answer runs to the 400-token limit.
        Harness(settings.copy(params = Fixtures.greedy(400)), file).use { h ->
            h.onMain { load(Fixtures.referenceModel, Fixtures.referenceTokenizer) }
            h.awaitState<ChatState.Ready>()
            assertTrue(h.onMain { send("Tell me a very long story.") })
            h.awaitState<ChatState.Generating> { it.partial.isNotEmpty() }
            // The turn holds the session: a trim on the caller's thread would wait for all of it.
            h.onMain { trimMemory() }
            assertIs<ChatState.Generating>(h.controller.state.value, "trimMemory returned during the answer")
            h.onMain { stop() }
            h.awaitState<ChatState.Ready> { it.transcript.size == 1 }
            h.awaitChatWork()
            val session = assertNotNull(h.controller.currentSession)
            val before = session.kvCacheBytes()
            h.onMain { trimMemory() }
            h.awaitChatWork()
            val after = session.kvCacheBytes()
            println("trim: KV cache $before -> $after bytes")
            assertTrue(after in 1L..before, "$before -> $after")
            // The trimmed chat is still whole: saved, restorable, and it goes on.
            assertNull(h.states.filterIsInstance<ChatState.Error>().firstOrNull())
            assertTrue(h.onMain { send("Go on.") })
            h.onMain { stop() }
            h.awaitState<ChatState.Ready> { it.transcript.size == 2 }
        }
    }
}
