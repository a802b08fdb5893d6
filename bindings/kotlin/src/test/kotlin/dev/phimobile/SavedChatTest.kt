package dev.phimobile

import dev.phimobile.Fixtures.greedy
import dev.phimobile.Fixtures.referenceModel
import java.io.File
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertIs
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * Saved chats through the Kotlin layer: a restored chat goes on exactly as the one that never
 * stopped (same greedy ids, its history served from the restored KV cache), and every file that
 * is not a chat this model saved is [LlmException.InvalidSavedChat].
 */
@Timeout(120)
class SavedChatTest {
    private val system = listOf(ChatMessage(Role.SYSTEM, "You are a helpful assistant."))
    private val dir: File = Fixtures.scratch.resolve("saved-chats").toFile().apply { mkdirs() }

    /** A chat of one turn, saved to [name]. */
    private suspend fun savedChat(name: String): File {
        val file = File(dir, name)
        referenceModel.newSession(system).use { chat ->
            chat.reply("Write a haiku about ice hockey.", greedy(24))
            chat.save(file)
        }
        return file
    }

    @Test
    fun `a restored chat has the same history and the same next greedy reply`() = runBlocking {
        val file = File(dir, "one-turn.phichat")
        val (history, kvBytes, uninterrupted) = referenceModel.newSession(system).use { chat ->
            chat.reply("Write a haiku about ice hockey.", greedy(24))
            chat.save(file)
            Triple(chat.history(), chat.kvCacheBytes(), chat.reply("Another one.", greedy(16)))
        }
        assertEquals(3, history.size) // system, user, assistant
        assertEquals(16, uninterrupted.tokenIds.size)
        // The KV cache is in the file: at least the prompt's and the answer's tokens of it.
        val info = referenceModel.info()
        assertTrue(file.length() >= info.kvBytesPerToken * 24L, "${file.length()} bytes")

        // As after the app was killed: another load of the same model file.
        loadModel(Fixtures.referenceConfig()).use { model ->
            model.restoreSession(file).use { restored ->
                assertEquals(history, restored.history())
                assertTrue(restored.kvCacheBytes() in 1L..kvBytes, "${restored.kvCacheBytes()} of $kvBytes")
                val next = restored.reply("Another one.", greedy(16))
                assertEquals(uninterrupted.tokenIds, next.tokenIds)
                assertEquals(uninterrupted.text, next.text)
                // The history came from the saved cache, as far as the uninterrupted chat's did,
                // where a new session with the same messages has to run all of it.
                assertEquals(uninterrupted.promptTokens, next.promptTokens)
                assertEquals(uninterrupted.cachedPromptTokens, next.cachedPromptTokens)
                assertTrue(next.cachedPromptTokens > 0)
                val rerun = model.newSession(history).use { it.reply("Another one.", greedy(16)) }
                assertEquals(0, rerun.cachedPromptTokens)
                assertEquals(history + listOf(ChatMessage(Role.USER, "Another one."), ChatMessage(Role.ASSISTANT, next.text)), restored.history())
                // reset() goes back to the history the chat was first created with.
                restored.reset()
                assertEquals(system, restored.history())
            }
        }
    }

    @Test
    fun `saving again replaces the file with the longer chat`() = runBlocking {
        val file = File(dir, "replaced.phichat")
        referenceModel.newSession(system).use { chat ->
            chat.reply("Name a color.", greedy(8))
            chat.save(file)
            chat.reply("And another one?", greedy(8))
            chat.save(file)
            referenceModel.restoreSession(file).use { assertEquals(chat.history(), it.history()) }
        }
        // Nothing is left beside it (the temporary file was renamed into place).
        assertEquals(listOf("replaced.phichat"), dir.list()!!.filter { it.startsWith("replaced") })
    }

    @Test
    fun `truncated, corrupt, garbage and missing files are InvalidSavedChat`() = runBlocking {
        val file = savedChat("to-damage.phichat")
        val bytes = file.readBytes()
        val damaged = mapOf(
            "empty" to ByteArray(0),
            "header only" to bytes.copyOf(40),
            "half" to bytes.copyOf(bytes.size / 2),
            "last byte missing" to bytes.copyOf(bytes.size - 1),
            "one byte flipped" to bytes.copyOf().also { it[it.size / 2] = (it[it.size / 2].toInt() xor 0x40).toByte() },
            "garbage" to kotlin.random.Random(7).nextBytes(bytes.size),
            "garbage with the magic" to "PHICHAT\u0000".toByteArray() + kotlin.random.Random(8).nextBytes(4096),
        )
        for ((what, content) in damaged) {
            val bad = File(dir, "damaged.phichat").apply { writeBytes(content) }
            val e = assertFailsWith<LlmException.InvalidSavedChat>(what) { referenceModel.restoreSession(bad) }
            assertTrue(e.reason.isNotEmpty(), what)
        }
        val missing = assertFailsWith<LlmException.InvalidSavedChat> { referenceModel.restoreSession(File(dir, "nope.phichat")) }
        assertTrue("no saved chat" in missing.reason, missing.reason)
        // The intact file still restores, and the model still answers as before.
        referenceModel.restoreSession(file).use { assertEquals(3, it.history().size) }
        val case = Fixtures.referenceCase("hello")
        assertEquals(case.expectedIds, referenceModel.complete(case.prompt, greedy(32)).tokenIds)
    }

    @Test
    fun `save into a missing directory is Storage, and from the session's own sink Busy`() = runBlocking {
        referenceModel.newSession(system).use { chat ->
            chat.reply("Hi", greedy(4))
            val e = assertFailsWith<LlmException.Storage> { chat.save(File(dir, "no/such/dir/chat.phichat")) }
            assertTrue(e.reason.isNotEmpty())

            // The blocking form from inside the turn's own sink (its generating thread): the turn
            // holds the session, so a save there would wait on itself; it is refused instead.
            val inSink = File(dir, "in-sink.phichat")
            var tried = false
            var thrown: Throwable? = null
            val stats = chat.send("Hello", greedy(8), object : TokenSink {
                override fun onText(piece: String): Boolean {
                    if (!tried) {
                        tried = true
                        thrown = runCatching { chat.save(inSink.path) }.exceptionOrNull()
                    }
                    return true
                }
            })
            assertTrue(tried)
            assertIs<LlmException.Busy>(thrown)
            assertEquals(StopReason.MAX_TOKENS, stats.stopReason)
            assertFalse(inSink.exists())
            // After the turn, the same call works.
            chat.save(inSink)
            assertEquals(chat.history(), referenceModel.restoreSession(inSink).use { it.history() })
        }
    }
}
