package dev.phimobile.chat

import dev.phimobile.LlmException
import java.io.File
import java.nio.file.Files
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/** Failures become Error states carrying the library's typed exception; none is fatal. */
@Timeout(180)
class ErrorsTest {
    private val settings = ChatSettings(params = Fixtures.greedy(16), contextLength = 1024)
    private val scratch: File = Files.createTempDirectory("chat-logic-errors").toFile()

    @Test
    fun `a missing file is ModelNotFound, and another model can be loaded after it`() {
        Harness(settings).use { h ->
            val missing = File(scratch, "nope.gguf").path
            h.onMain { load(missing) }
            val error = h.awaitState<ChatState.Error>()
            val cause = assertIs<LlmException.ModelNotFound>(error.cause)
            assertEquals(missing, cause.what)
            assertFalse(error.recoverable)
            assertNull(error.model)
            assertTrue(error.message.contains(missing), error.message)
            assertEquals(listOf("NoModel", "Loading", "Error"), h.kinds())
            assertFalse(h.onMain { send("Hello") }, "no model to talk to")

            h.onMain { load(Fixtures.smolLm2) }
            h.awaitState<ChatState.Ready>()
        }
    }

    @Test
    fun `a corrupt file is InvalidModel`() {
        // The first MiB of a real model: a valid header whose tensors run past the end.
        val truncated = File(scratch, "truncated.gguf")
        File(Fixtures.smolLm2).inputStream().use { input -> truncated.writeBytes(input.readNBytes(1 shl 20)) }
        val garbage = File(scratch, "garbage.gguf").apply { writeBytes(ByteArray(4096) { (it * 31 + 7).toByte() }) }
        Harness(settings).use { h ->
            for (file in listOf(truncated, garbage)) {
                h.onMain { load(file.path) }
                val error = h.awaitState<ChatState.Error>()
                assertIs<LlmException.InvalidModel>(error.cause, "${file.name}: ${error.cause}")
                assertFalse(error.recoverable)
                assertTrue(error.message.startsWith("The file is not a usable model"), error.message)
            }
        }
    }

    @Test
    fun `a conversation past the context is a recoverable ContextOverflow, cleared by a new chat`() {
        Harness(settings.copy(contextLength = 64)).use { h ->
            h.onMain { load(Fixtures.smolLm2) }
            val ready = h.awaitState<ChatState.Ready>()
            assertTrue(h.onMain { send("Please summarise this: " + "the quick brown fox jumps over the lazy dog ".repeat(20)) })
            val error = h.awaitState<ChatState.Error>()
            val cause = assertIs<LlmException.ContextOverflow>(error.cause)
            assertEquals(64, cause.available)
            assertTrue(error.recoverable)
            assertEquals(ready.model, assertNotNull(error.model), "the model stays loaded")
            assertTrue(error.message.contains("start a new chat"), error.message)

            // Still usable: a short message right away, and a new chat.
            assertTrue(h.onMain { send("Hi") })
            h.awaitState<ChatState.Ready> { it.transcript.size == 1 }
            assertTrue(h.onMain { newChat() })
            assertTrue((h.controller.state.value as ChatState.Ready).transcript.isEmpty())
        }
    }
}
