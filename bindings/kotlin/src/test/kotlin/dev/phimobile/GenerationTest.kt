package dev.phimobile

import dev.phimobile.Fixtures.greedy
import dev.phimobile.Fixtures.referenceModel
import java.util.concurrent.Executors
import kotlin.test.assertEquals
import kotlin.test.assertIs
import kotlin.test.assertNotEquals
import kotlin.test.assertTrue
import kotlin.test.fail
import kotlinx.coroutines.Job
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(120)
class GenerationTest {
    @Test
    fun `greedy ids equal the Rust reference test (hello case)`() = runBlocking {
        val case = Fixtures.referenceCase("hello")
        assertEquals(32, case.expectedIds.size)
        loadModel(Fixtures.referenceConfig()).use { model ->
            assertEquals(case.promptIds, model.tokenize(case.prompt))
            val stats = model.complete(case.prompt, greedy(case.expectedIds.size))
            assertEquals(case.expectedIds, stats.tokenIds)
            assertEquals(StopReason.MAX_TOKENS, stats.stopReason)
            assertEquals(case.promptIds.size, stats.promptTokens)
            assertEquals(32, stats.generatedTokens)
            // The generated blocking API agrees.
            val direct = model.generate(case.prompt, greedy(32), object : TokenSink {
                override fun onText(piece: String) = true
            })
            assertEquals(case.expectedIds, direct.tokenIds)
        }
    }

    @Test
    fun `flow concatenation equals the stats text`() = runBlocking {
        val params = greedy(64)
        val events = referenceModel.streamEvents("Hello, world", params).toList()
        val done = assertIs<GenerationEvent.Done>(events.last())
        assertEquals(1, events.count { it is GenerationEvent.Done })
        val pieces = events.filterIsInstance<GenerationEvent.Text>().map { it.piece }
        assertTrue(pieces.size > 1, "expected several pieces, got $pieces")
        assertTrue(pieces.all { it.isNotEmpty() })
        assertEquals(done.stats.text, pieces.joinToString(""))
        // Flow<String> and the suspend form see the same deterministic text.
        assertEquals(done.stats.text, referenceModel.stream("Hello, world", params).toList().joinToString(""))
        val streamed = StringBuilder()
        val stats = referenceModel.complete("Hello, world", params) { streamed.append(it) }
        assertEquals(done.stats.tokenIds, stats.tokenIds)
        assertEquals(stats.text, streamed.toString())
    }

    @Test
    fun `chat turn flow concatenation equals the stats text and the history`() = runBlocking {
        referenceModel.newSession(listOf(ChatMessage(Role.SYSTEM, "You are a helpful assistant."))).use { chat ->
            val events = chat.streamEvents("Write a haiku about ice hockey.", greedy(40)).toList()
            val stats = assertIs<GenerationEvent.Done>(events.last()).stats
            val text = events.filterIsInstance<GenerationEvent.Text>().joinToString("") { it.piece }
            assertEquals(stats.text, text)
            assertEquals(ChatMessage(Role.ASSISTANT, text), chat.history().last())
            // Second turn reuses the cached prompt.
            val pieces = chat.stream("Another one.", greedy(16)).toList()
            assertEquals(pieces.joinToString(""), chat.history().last().content)
            assertEquals(5, chat.history().size)
            // Pieces arrive in the caller's context (here runBlocking's thread), not the generating one.
            val threads = mutableSetOf<Thread>()
            chat.reply("More.", greedy(8)) { threads += Thread.currentThread() }
            assertEquals(setOf(Thread.currentThread()), threads)
        }
    }

    @Test
    fun `loading runs off the calling thread and reports progress`() {
        val progress = mutableListOf<Pair<Long, Long>>()
        var progressThread: Thread? = null
        val caller = Thread.currentThread()
        runBlocking {
            loadModel(Fixtures.referenceConfig()) { read, total ->
                progressThread = Thread.currentThread()
                synchronized(progress) { progress += read to total }
            }.use { model ->
                val size = java.io.File(Fixtures.referenceModelPath).length()
                assertEquals(size, model.info().fileSizeBytes)
                assertTrue(progress.isNotEmpty())
                assertEquals(progress.map { it.first }.sorted(), progress.map { it.first })
                assertTrue(progress.all { it.second == size })
                assertEquals(size, progress.last().first)
            }
        }
        assertNotEquals(caller, progressThread)
    }

    @Test
    fun `a throwing progress callback stops loading and is rethrown`() {
        class Boom : RuntimeException("boom")
        var reports = 0
        kotlin.test.assertFailsWith<Boom> {
            runBlocking { loadModel(Fixtures.referenceConfig()) { _, _ -> reports++; throw Boom() } }
        }
        assertEquals(1, reports, "no report after the one that threw")
    }

    @Test
    fun `cancelling the caller stops the load`() = runBlocking {
        var reports = 0
        val job = launch {
            val self = checkNotNull(coroutineContext[Job])
            loadModel(Fixtures.referenceConfig()) { _, _ ->
                if (++reports == 1) {
                    self.cancel()
                    // Time for the cancellation to reach the load's token.
                    Thread.sleep(200)
                }
            }.close()
            fail("the load was not stopped")
        }
        job.join()
        assertTrue(job.isCancelled)
        // A whole load of this model reports once per tensor (more than 10 times).
        assertTrue(reports in 1..2, "$reports reports")
    }

    @Test
    fun `the main thread stays free while generating`() = runBlocking {
        // A single-threaded "main" dispatcher keeps ticking during a long generation.
        val dispatcher = Executors.newSingleThreadExecutor().asCoroutineDispatcher()
        try {
            withContext(dispatcher) {
                var ticks = 0
                val ticker = launch {
                    while (true) {
                        delay(1)
                        ticks++
                    }
                }
                val stats = referenceModel.complete("Hello, world", greedy(200))
                ticker.cancel()
                assertTrue(ticks > 0, "main dispatcher starved during ${stats.generatedTokens} tokens")
            }
        } finally {
            dispatcher.close()
        }
    }
}
