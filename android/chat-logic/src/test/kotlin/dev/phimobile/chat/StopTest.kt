package dev.phimobile.chat

import dev.phimobile.StopReason
import kotlin.test.assertEquals
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * Stop ends an answer within one token and keeps it. The synthetic reference Phi-3 has random
 * weights, so a greedy answer runs to its 400-token limit unless stopped: a stop shows.
 */
@Timeout(180)
class StopTest {
    private val settings = ChatSettings(params = Fixtures.greedy(400), contextLength = 1024)

    private fun Harness.loadReference() {
        onMain { load(Fixtures.referenceModel, Fixtures.referenceTokenizer) }
        awaitState<ChatState.Ready>()
    }

    @Test
    fun `stop mid-answer ends it within a token, keeps it, and the chat goes on`() {
        Harness(settings).use { h ->
            h.loadReference()
            assertTrue(h.onMain { send("Tell me a very long story.") })
            h.awaitState<ChatState.Generating> { it.partial.length >= 200 }
            // Counted on the main thread as stop() runs: pieces published while the test thread
            // waits for the main thread (long on a loaded machine) came before the stop.
            var stoppedAt = 0L
            val updatesBefore = h.onMain {
                stoppedAt = System.nanoTime()
                h.states.size.also { stop() }
            }
            val done = h.awaitState<ChatState.Ready>(timeout = kotlin.time.Duration.parse("10s"))
            val stopMs = (System.nanoTime() - stoppedAt) / 1e6
            val updatesAfter = h.states.drop(updatesBefore).count { it is ChatState.Generating }

            val turn = done.transcript.single()
            val stats = assertNotNull(turn.stats)
            println("stop: answered ${stats.generatedTokens} tokens, Ready ${"%.1f".format(stopMs)} ms after stop(), $updatesAfter pieces after it; $stats")
            assertEquals(StopReason.CANCELLED, stats.stopReason)
            assertTrue(stats.generatedTokens in 1..399, "$stats")
            // After stop(): the piece being handed over, the one token the generator may have
            // sampled before it saw the cancel, and the held-back end of the last token's text
            // (pieces end on whole graphemes); nothing after them.
            assertTrue(updatesAfter <= 3, "$updatesAfter pieces after stop()")
            val lastPartial = h.states.filterIsInstance<ChatState.Generating>().last().partial
            assertEquals(lastPartial, turn.assistant, "the kept answer is what was shown")
            val msPerToken = 1000.0 / stats.tokensPerSecond
            assertTrue(stopMs < 3 * msPerToken + 500, "stop took $stopMs ms at $msPerToken ms/token")

            // The stopped turn is part of the conversation; the next one builds on it.
            assertTrue(h.onMain { send("Go on.") })
            val next = h.awaitState<ChatState.Generating> { it.partial.isNotEmpty() }
            assertEquals(1, next.transcript.size)
            h.onMain { stop() }
            val after = h.awaitState<ChatState.Ready> { it.transcript.size == 2 }
            // Its prompt holds the stopped answer (re-tokenized, so the count differs a little;
            // without the answer it would be the first prompt plus a handful of tokens).
            val second = assertNotNull(after.transcript[1].stats)
            assertTrue(second.promptTokens >= stats.promptTokens + stats.generatedTokens / 2, "$second after $stats")
        }
    }

    @Test
    fun `stop right after send ends the turn at once, even before the first token`() {
        Harness(settings).use { h ->
            h.loadReference()
            // Both calls in one main-thread task: stop() lands before generation has started.
            // The turn's CancellationToken stays cancelled, so the library stops it before the
            // first token (no repeated cancel from the controller).
            h.onMain {
                assertTrue(send("Tell me a very long story."))
                stop()
            }
            val turn = h.awaitState<ChatState.Ready>(timeout = kotlin.time.Duration.parse("10s")).transcript.single()
            val stats = assertNotNull(turn.stats)
            assertEquals(StopReason.CANCELLED, stats.stopReason)
            assertEquals(0, stats.generatedTokens, "$stats")
        }
    }

    @Test
    fun `stop while idle changes nothing`() {
        Harness(settings).use { h ->
            h.onMain { stop() }
            assertEquals(ChatState.NoModel, h.controller.state.value)
            h.loadReference()
            val before = h.controller.state.value
            h.onMain { stop() }
            assertEquals(before, h.controller.state.value)
        }
    }
}
