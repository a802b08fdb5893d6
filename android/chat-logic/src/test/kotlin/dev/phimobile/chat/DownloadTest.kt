package dev.phimobile.chat

import com.sun.net.httpserver.HttpExchange
import com.sun.net.httpserver.HttpServer
import dev.phimobile.DownloadRequest
import dev.phimobile.LlmException
import java.io.File
import java.io.RandomAccessFile
import java.net.InetSocketAddress
import java.nio.file.Files
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertIs
import kotlin.test.assertTrue
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * Downloading through the library's real `downloadModel`, from a local stand-in for the Hub
 * (the JDK's HTTP server speaking the resolve protocol the library's own tests use) that serves
 * the real SmolLM2 file, then loading and chatting with it.
 */
@Timeout(180)
class DownloadTest {
    private val source = File(Fixtures.smolLm2)

    // fetch-fixtures.sh pins this hash; the library checks the download against the etag.
    private val sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    private val stall = CountDownLatch(1)
    @Volatile private var stallAfterBytes = Long.MAX_VALUE
    private val server = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0).apply {
        createContext("/HuggingFaceTB/SmolLM2/resolve/main/smollm2.gguf") { serve(it) }
        executor = Executors.newCachedThreadPool()
        start()
    }
    private val models: File = Files.createTempDirectory("chat-logic-download").toFile()
    private val request = DownloadRequest(
        repoId = "HuggingFaceTB/SmolLM2",
        filename = "smollm2.gguf",
        endpoint = "http://127.0.0.1:${server.address.port}",
    )
    private val settings = ChatSettings(params = Fixtures.greedy(8), contextLength = 512)

    private fun serve(exchange: HttpExchange) {
        val size = source.length()
        val range = exchange.requestHeaders.getFirst("Range")?.removePrefix("bytes=")
        val start = range?.substringBefore('-')?.toLong() ?: 0L
        val end = range?.substringAfter('-')?.takeIf { it.isNotEmpty() }?.toLong() ?: (size - 1)
        exchange.responseHeaders.apply {
            add("x-repo-commit", "0123456789abcdef0123456789abcdef01234567")
            add("ETag", "\"$sha256\"")
            add("Content-Range", "bytes $start-$end/$size")
        }
        exchange.sendResponseHeaders(206, end - start + 1)
        try {
            exchange.responseBody.use { out ->
                RandomAccessFile(source, "r").use { file ->
                    file.seek(start)
                    val buffer = ByteArray(1 shl 16)
                    var left = end - start + 1
                    var sent = 0L
                    while (left > 0) {
                        if (sent >= stallAfterBytes) stall.await(30, TimeUnit.SECONDS)
                        val n = file.read(buffer, 0, minOf(buffer.size.toLong(), left).toInt())
                        out.write(buffer, 0, n)
                        left -= n
                        sent += n
                    }
                }
            }
        } catch (_: java.io.IOException) {
            // The client went away (a stopped download): nothing to do.
        }
    }

    @AfterEach
    fun cleanUp() {
        stall.countDown()
        server.stop(0)
        models.deleteRecursively()
    }

    @Test
    fun `download shows progress, then loads the file and chats`() {
        Harness(settings).use { h ->
            h.onMain { download(request, models) }
            val ready = h.awaitState<ChatState.Ready>()
            val file = File(ready.model.path)
            assertTrue(file.canonicalPath.startsWith(models.canonicalPath), "${file.path} is outside $models")
            assertContentEquals(source.readBytes(), file.readBytes())

            assertEquals(listOf("NoModel", "Downloading", "Loading", "Ready"), h.kinds())
            val progress = h.states.filterIsInstance<ChatState.Downloading>()
            assertTrue(progress.all { it.source == ChatState.Downloading.Source.DOWNLOAD })
            assertEquals(source.length(), progress.last().bytesDone)
            assertEquals(source.length(), progress.last().totalBytes)
            assertTrue(progress.map { it.bytesDone }.zipWithNext().all { (a, b) -> a <= b }, "progress goes back")

            assertTrue(h.onMain { send("Hi") })
            h.awaitState<ChatState.Ready> { it.transcript.size == 1 }
        }
    }

    @Test
    fun `a stopped download stops at once and resumes on the next try`() {
        stallAfterBytes = 20L shl 20
        Harness(settings).use { h ->
            h.onMain { download(request, models) }
            // Progress is reported as bytes arrive (at most every 50 ms): the last report
            // before the server stalls may lag what is on disk, never lead it.
            val stoppedAt = h.awaitState<ChatState.Downloading> { it.bytesDone > 0 }.bytesDone
            h.onMain { stop() }
            assertEquals(ChatState.NoModel, h.controller.state.value)
            Thread.sleep(300) // any late progress report must not resurrect the download state
            assertEquals(ChatState.NoModel, h.controller.state.value)
            assertTrue(h.loaded.isEmpty())

            stallAfterBytes = Long.MAX_VALUE
            stall.countDown()
            h.onMain { download(request, models) }
            h.awaitState<ChatState.Ready>()
            // The second attempt started where the first one stopped, not at zero.
            // (The states start with the initial NoModel: skip it and the first attempt.)
            val secondAttempt = h.states.dropWhile { it !is ChatState.Downloading }
                .dropWhile { it != ChatState.NoModel }.dropWhile { it == ChatState.NoModel }
            val firstReport = secondAttempt.filterIsInstance<ChatState.Downloading>().first { it.bytesDone > 0 }
            assertTrue(firstReport.bytesDone > stoppedAt, "resumed at ${firstReport.bytesDone}, stopped at $stoppedAt")
        }
    }

    @Test
    fun `an unknown file and an unreachable mirror are errors without a model`() {
        Harness(settings).use { h ->
            h.onMain { download(request.copy(filename = "missing.gguf"), models) }
            val missing = h.awaitState<ChatState.Error>()
            assertIs<LlmException.ModelNotFound>(missing.cause)
            assertFalse(missing.recoverable)

            server.stop(0)
            h.onMain { download(request, models) }
            val offline = h.awaitState<ChatState.Error>(timeout = kotlin.time.Duration.parse("60s")) { it !== missing }
            assertIs<LlmException.Network>(offline.cause)
            assertTrue(offline.message.startsWith("Download failed"), offline.message)
        }
    }
}
