package dev.phimobile.chat

import java.io.File
import java.io.FileInputStream
import java.io.InputStream
import java.nio.file.Files
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/** Copying a model into app storage (what the app does with a SAF document), then loading it. */
@Timeout(180)
class ImportTest {
    private val settings = ChatSettings(params = Fixtures.greedy(16), contextLength = 1024)
    private val models: File = Files.createTempDirectory("chat-logic-import").toFile()
    private val source = File(Fixtures.smolLm2)

    @Test
    fun `import copies with progress, then loads the copy`() {
        Harness(settings).use { h ->
            h.onMain { importFile("SmolLM2.gguf", source.length(), models) { FileInputStream(source) } }
            val ready = h.awaitState<ChatState.Ready>()
            val copy = File(models, "SmolLM2.gguf")
            assertEquals(copy.path, ready.model.path)
            assertEquals(source.length(), copy.length())
            assertContentEquals(source.readBytes(), copy.readBytes())
            assertEquals(listOf(copy.name), models.list()!!.toList(), "no partial file left")

            assertEquals(listOf("NoModel", "Downloading", "Loading", "Ready"), h.kinds())
            val copying = h.states.filterIsInstance<ChatState.Downloading>()
            assertTrue(copying.all { it.source == ChatState.Downloading.Source.IMPORT && it.totalBytes == source.length() })
            val done = copying.map { it.bytesDone }
            assertEquals(0L, done.first())
            assertEquals(source.length(), done.last())
            assertTrue(done.zipWithNext().all { (a, b) -> a < b }, "progress must grow")
            assertTrue(done.size > 10, "${done.size} progress steps for ${source.length()} bytes")
            assertEquals(1f, copying.last().fraction)

            assertTrue(h.onMain { send("Hello") })
            h.awaitState<ChatState.Ready> { it.transcript.size == 1 }
        }
    }

    @Test
    fun `a stopped import leaves neither a model nor a partial file`() {
        val gate = CountDownLatch(1)
        val closed = CountDownLatch(1)
        // Hands out the first few MiB, then blocks until the test has pressed stop.
        val stream = object : InputStream() {
            val inner = FileInputStream(source)
            var reads = 0
            override fun read(): Int = error("not used")
            override fun read(b: ByteArray, off: Int, len: Int): Int {
                if (++reads == 4) gate.await()
                return inner.read(b, off, len)
            }
            override fun close() {
                inner.close()
                closed.countDown()
            }
        }
        Harness(settings).use { h ->
            h.onMain { importFile("big.gguf", source.length(), models) { stream } }
            h.awaitState<ChatState.Downloading> { it.bytesDone >= 3L shl 20 }
            h.onMain { stop() }
            assertEquals(ChatState.NoModel, h.controller.state.value, "stop shows at once")
            gate.countDown()
            assertTrue(closed.await(30, TimeUnit.SECONDS), "the source stream was not closed")
            // The copy notices the stop at its next chunk and cleans up after itself.
            val deadline = System.nanoTime() + 10_000_000_000
            while (models.list()!!.isNotEmpty() && System.nanoTime() < deadline) Thread.sleep(20)
            assertEquals(emptyList(), models.list()!!.toList())
            assertTrue(h.loaded.isEmpty(), "nothing was loaded")
            assertEquals(ChatState.NoModel, h.controller.state.value, "nothing published after the stop")
        }
    }

    @Test
    fun `imported names cannot leave the models directory`() {
        assertEquals("x.gguf", modelFileName("../../evil/x.gguf"))
        assertEquals("x.gguf", modelFileName("..\\x.gguf"))
        assertEquals("model.gguf", modelFileName(".."))
        assertEquals("model.gguf", modelFileName("dir/"))
        assertFalse(modelFileName("a\u0000b.gguf").contains('\u0000'))
    }
}
