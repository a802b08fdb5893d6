package dev.phimobile

import com.sun.net.httpserver.HttpExchange
import com.sun.net.httpserver.HttpServer
import java.io.File
import java.net.InetSocketAddress
import java.nio.file.Files
import java.security.MessageDigest
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.random.Random
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * The coroutine layer's [downloadModel] against a minimal Hub stand-in (the JDK's HTTP server):
 * the resolve URL answers the metadata probe (`Range: bytes=0-0`) with `x-repo-commit`, an etag
 * (the SHA-256) and `Content-Range`, and serves ranges of the file. The protocol's corner cases
 * (redirects, dropped connections, resume, corruption) are covered by the Rust tests.
 */
@Timeout(60)
class DownloadTest {
    private val bytes = Random(7).nextBytes(600_000)
    private val sha = MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }
    private val release = CountDownLatch(1)
    @Volatile private var stallBodies = false
    private val server = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0).apply {
        createContext("/org/model/resolve/main/model.gguf") { serve(it) }
        executor = java.util.concurrent.Executors.newCachedThreadPool()
        start()
    }
    private val dir: File = Files.createTempDirectory("phi-mobile-download").toFile()
    private val request = DownloadRequest(
        repoId = "org/model",
        filename = "model.gguf",
        endpoint = "http://127.0.0.1:${server.address.port}",
    )

    private fun serve(exchange: HttpExchange) {
        val start = exchange.requestHeaders.getFirst("Range")?.removePrefix("bytes=")?.substringBefore('-')?.toInt() ?: 0
        val end = exchange.requestHeaders.getFirst("Range")?.substringAfter('-')?.takeIf { it.isNotEmpty() }?.toInt()
            ?: (bytes.size - 1)
        exchange.responseHeaders.apply {
            add("x-repo-commit", "0123456789abcdef0123456789abcdef01234567")
            add("ETag", "\"$sha\"")
            add("Content-Range", "bytes $start-$end/${bytes.size}")
        }
        val body = bytes.copyOfRange(start, end + 1)
        exchange.sendResponseHeaders(206, body.size.toLong())
        exchange.responseBody.use { out ->
            if (stallBodies && body.size > 1) {
                out.write(body, 0, body.size / 2)
                out.flush()
                release.await(30, TimeUnit.SECONDS)
            } else {
                out.write(body)
            }
        }
    }

    @AfterEach
    fun stop() {
        release.countDown()
        server.stop(0)
        dir.deleteRecursively()
    }

    @Test
    fun `downloads with progress, then returns the same file without network`() = runBlocking {
        val seen = mutableListOf<Pair<Long, Long>>()
        val model = downloadModel(request, dir) { done, total -> synchronized(seen) { seen += done to total } }
        assertContentEquals(bytes, model.file.readBytes())
        assertEquals(bytes.size.toLong() to bytes.size.toLong(), seen.last())
        // The etag is a SHA-256: the content was checked against it.
        assertEquals(DownloadedModel(model.path, bytes.size.toLong(), "0123456789abcdef0123456789abcdef01234567", sha, true), model)
        server.stop(0)
        assertEquals(model, downloadModel(request, dir))
    }

    @Test
    fun `cancelling the caller stops a stalled download promptly`() = runBlocking {
        stallBodies = true
        val job = async(Dispatchers.Default) { downloadModel(request, dir) }
        Thread.sleep(500)
        val started = System.nanoTime()
        job.cancel()
        assertFailsWith<CancellationException> { job.await() }
        val ms = (System.nanoTime() - started) / 1_000_000
        // The transfer itself stops within ~20 ms; the rest is coroutine and JVM slack.
        assertTrue(ms < 1_000, "cancel took $ms ms")
        // The lock on the partial file went with it: a retry resumes at once.
        stallBodies = false
        assertContentEquals(bytes, downloadModel(request, dir).file.readBytes())
    }

    @Test
    fun `a stalled mirror without a cancel is a Network error after the read timeout`() = runBlocking<Unit> {
        stallBodies = true
        val started = System.nanoTime()
        val e = assertFailsWith<LlmException.Network> { downloadModel(request.copy(readTimeoutMs = 200L), dir) }
        assertTrue(e.reason.contains("no data for 200 ms"), e.reason)
        assertTrue((System.nanoTime() - started) / 1_000_000 < 10_000)
        // Timeouts are validated where they are set.
        val bad = assertFailsWith<LlmException.InvalidParameter> { downloadModel(request.copy(readTimeoutMs = -1L), dir) }
        assertEquals("read_timeout_ms", bad.name)
    }

    @Test
    fun `an exception from onProgress is rethrown as is`() = runBlocking<Unit> {
        stallBodies = true
        class ViewGone : RuntimeException("view gone")
        assertFailsWith<ViewGone> { downloadModel(request, dir) { _, _ -> throw ViewGone() } }
    }

    @Test
    fun `an unknown file and an unreachable mirror are typed errors`() = runBlocking<Unit> {
        assertFailsWith<LlmException.ModelNotFound> { downloadModel(request.copy(filename = "other.gguf"), dir) }
        server.stop(0)
        withTimeout(30_000) {
            assertFailsWith<LlmException.Network> { downloadModel(request, dir) }
        }
    }
}
