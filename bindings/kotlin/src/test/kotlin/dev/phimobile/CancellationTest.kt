package dev.phimobile

import dev.phimobile.Fixtures.greedy
import dev.phimobile.Fixtures.referenceModel
import java.util.concurrent.atomic.AtomicInteger
import java.util.concurrent.atomic.AtomicReference
import kotlin.test.assertEquals
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * Cancellation stops generation within one token. Long greedy runs (400 tokens) are the
 * baseline: each cancelled run must stop right after the cancel, which the deterministic
 * greedy output lets us check piece by piece.
 */
@Timeout(120)
class CancellationTest {
    private val long = greedy(400)
    private val prompt = "Tell me a very long story."

    // Not runBlocking's children: if cancellation failed to stop them, the test fails on its
    // timeout instead of hanging in runBlocking.
    private val outside = CoroutineScope(Dispatchers.Default)

    private class CountingSink(private val inner: TokenSink, val calls: AtomicInteger) : TokenSink {
        override fun onText(piece: String): Boolean {
            calls.incrementAndGet()
            return inner.onText(piece)
        }
    }

    @Test
    fun `cancelling the collector of a one-shot flow stops generation at the next piece`() = runBlocking {
        val full = referenceModel.stream(prompt, long).toList()
        assertTrue(full.size > 20, "baseline too short: ${full.size} pieces")
        // The public flow, observed from the Rust side through the same bridge.
        val calls = AtomicInteger()
        val rustStats = AtomicReference<GenerationResult>()
        val got = generationEvents(onCancel = null) { sink ->
            referenceModel.generate(prompt, long, CountingSink(sink, calls)).also(rustStats::set)
        }.filterIsInstance<GenerationEvent.Text>().map { it.piece }.take(3).toList()
        // collect returned, so the blocking call has returned too.
        val stats = assertNotNull(rustStats.get())
        assertEquals(full.take(3), got)
        assertEquals(StopReason.CANCELLED, stats.stopReason)
        assertTrue(calls.get() <= 4, "sink called ${calls.get()} times after 3 pieces were taken")
        assertTrue(stats.text in setOf(full.take(3).joinToString(""), full.take(4).joinToString("")), stats.text)
        // And through the public extension: take(3) returns the same three pieces.
        assertEquals(full.take(3), referenceModel.stream(prompt, long).take(3).toList())
    }

    @Test
    fun `cancelling a collector that the generator is waiting for does not hang`() = runBlocking {
        // The collector parks inside collect after 3 pieces, so the generating thread blocks
        // handing over the 4th; cancelling the collector must release it (no session.cancel()
        // to help here: one-shot generation has none).
        val calls = AtomicInteger()
        val rustStats = AtomicReference<GenerationResult>()
        val third = CompletableDeferred<Unit>()
        val job = outside.launch {
            var n = 0
            generationEvents(onCancel = null) { sink ->
                referenceModel.generate(prompt, long, CountingSink(sink, calls)).also(rustStats::set)
            }.collect {
                if (++n == 3) {
                    third.complete(Unit)
                    awaitCancellation()
                }
            }
        }
        third.await()
        // Cancel only once the generator is inside the sink for piece 4, blocked handing it over.
        while (calls.get() < 4) Thread.sleep(1)
        Thread.sleep(20)
        withTimeout(30_000) { job.cancelAndJoin() }
        val stats = assertNotNull(rustStats.get())
        assertEquals(StopReason.CANCELLED, stats.stopReason)
        assertEquals(4, calls.get())
    }

    @Test
    fun `cancelling the collector of a chat turn stops it within one token`() = runBlocking {
        val full = referenceModel.newSession(emptyList()).use { it.stream(prompt, long).toList() }
        assertTrue(full.size > 20, "baseline too short: ${full.size} pieces")
        referenceModel.newSession(emptyList()).use { chat ->
            // Cancel a collecting job from outside after the third piece.
            val third = CompletableDeferred<Unit>()
            val got = mutableListOf<String>()
            val job = outside.launch {
                chat.stream(prompt, long).collect {
                    synchronized(got) { got += it }
                    if (got.size == 3) {
                        third.complete(Unit)
                        CompletableDeferred<Unit>().await() // park until cancelled
                    }
                }
            }
            third.await()
            withTimeout(30_000) { job.cancelAndJoin() }
            // The partial answer is in the history: the three pieces and at most the fourth, or its
            // start (the held-back end of the last token's text, released on cancel).
            val answer = chat.history().last()
            assertEquals(Role.ASSISTANT, answer.role)
            val three = full.take(3).joinToString("")
            val four = full.take(4).joinToString("")
            assertTrue(answer.content.startsWith(three) && four.startsWith(answer.content), answer.content)
            // The session works afterwards, and the cancel aimed at the old turn does not hit this one.
            val next = chat.reply("Go on.", greedy(8))
            assertEquals(StopReason.MAX_TOKENS, next.stopReason)
        }
    }

    @Test
    fun `cancel() from another coroutine ends the turn with stop reason CANCELLED`() = runBlocking {
        referenceModel.newSession(emptyList()).use { chat ->
            val firstPiece = CompletableDeferred<Unit>()
            val cancelled = CompletableDeferred<Unit>()
            launch(Dispatchers.Default) {
                firstPiece.await()
                chat.cancel()
                cancelled.complete(Unit)
            }
            val pieces = mutableListOf<String>()
            val stats = chat.reply(prompt, long) { piece ->
                pieces += piece
                if (pieces.size == 1) {
                    firstPiece.complete(Unit)
                    cancelled.await()
                }
            }
            assertEquals(StopReason.CANCELLED, stats.stopReason)
            // The generator had at most one more piece in hand when cancel() landed, then it
            // releases the held-back end of the last token's text (pieces end on whole graphemes).
            assertTrue(pieces.size <= 3, "${pieces.size} pieces after cancel")
            assertEquals(stats.text, pieces.joinToString(""))
            assertEquals(stats.text, chat.history().last().content)
        }
    }

    @Test
    fun `cancel() stops a flow collection which then completes normally`() = runBlocking {
        referenceModel.newSession(emptyList()).use { chat ->
            val events = mutableListOf<GenerationEvent>()
            chat.streamEvents(prompt, long).collect { e ->
                events += e
                if (events.size == 2) chat.cancel()
            }
            val done = events.last() as GenerationEvent.Done
            assertEquals(StopReason.CANCELLED, done.stats.stopReason)
            // Two pieces, at most one more in hand when cancel() landed, the held-back end of
            // the last token's text (pieces end on whole graphemes), then Done.
            assertTrue(events.size <= 5, "${events.size} events")
        }
    }
}
