package dev.phimobile.chat

import dev.phimobile.ModelConfig
import dev.phimobile.StopReason
import dev.phimobile.loadModel
import dev.phimobile.reply
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/** Loading and chatting with a real model (SmolLM2), compared with the library used directly. */
@Timeout(180)
class ChatFlowTest {
    private val params = Fixtures.greedy(20)
    private val settings = ChatSettings(params = params, contextLength = 1024)

    /** What the library answers to [prompts], in one session, without the controller. */
    private fun direct(vararg prompts: String): List<String> = runBlocking {
        loadModel(ModelConfig(modelPath = Fixtures.smolLm2, contextLength = settings.contextLength)).use { model ->
            model.newSession(emptyList()).use { session -> prompts.map { session.reply(it, params).text } }
        }
    }

    @Test
    fun `load then one turn visits the states in order and streams the whole answer`() {
        Harness(settings).use { h ->
            h.onMain { load(Fixtures.smolLm2) }
            val ready = h.awaitState<ChatState.Ready>()
            assertEquals(Fixtures.smolLm2, ready.model.path)
            assertEquals("llama", ready.model.info.architecture)
            assertTrue(ready.transcript.isEmpty())

            assertTrue(h.onMain { send("What is the capital of France?") })
            val done = h.awaitState<ChatState.Ready> { it.transcript.size == 1 }
            assertEquals(listOf("NoModel", "Loading", "Ready", "Generating", "Ready"), h.kinds())

            val progress = h.states.filterIsInstance<ChatState.Loading>().map { it.progress }
            assertEquals(0f, progress.first())
            assertTrue(progress.zipWithNext().all { (a, b) -> a <= b }, "loading progress goes back: $progress")
            assertTrue(progress.last() in 0.9f..1f, "loading ends at ${progress.last()}")

            // Generating starts empty and grows piece by piece; its last text is the answer the
            // library reported in its stats.
            val partials = h.states.filterIsInstance<ChatState.Generating>().map { it.partial }
            assertEquals("", partials.first())
            assertTrue(partials.size > 3, "streamed in ${partials.size} steps")
            assertTrue(partials.zipWithNext().all { (a, b) -> b.length > a.length && b.startsWith(a) }, "$partials")
            val turn = done.transcript.single()
            assertEquals("What is the capital of France?", turn.user)
            assertEquals(partials.last(), turn.assistant)
            assertEquals(direct("What is the capital of France?").single(), turn.assistant)

            println("SmolLM2 turn: ${turn.stats}")
            with(assertNotNull(turn.stats)) {
                assertTrue(stopReason == StopReason.END_OF_SEQUENCE || stopReason == StopReason.MAX_TOKENS, "$stopReason")
                assertTrue(generatedTokens in 1..20, "$generatedTokens")
                assertTrue(timeToFirstTokenMs > 0.0, "ttft $timeToFirstTokenMs")
                assertTrue(tokensPerSecond > 0.0, "tok/s $tokensPerSecond")
                assertTrue(promptTokens > 0)
            }
        }
    }

    @Test
    fun `a second turn continues the conversation and reuses the cache`() {
        val prompts = arrayOf("Name a color.", "And another one?")
        Harness(settings).use { h ->
            h.onMain { load(Fixtures.smolLm2) }
            h.awaitState<ChatState.Ready>()
            assertTrue(h.onMain { send(prompts[0]) })
            h.awaitState<ChatState.Ready> { it.transcript.size == 1 }
            assertTrue(h.onMain { send(prompts[1]) })
            val done = h.awaitState<ChatState.Ready> { it.transcript.size == 2 }

            val (t1, t2) = done.transcript
            assertEquals(prompts.toList(), listOf(t1.user, t2.user))
            assertEquals(direct(*prompts), listOf(t1.assistant, t2.assistant))
            // The second prompt is the whole conversation, mostly served from the KV cache.
            val (s1, s2) = done.transcript.map { assertNotNull(it.stats) }
            assertTrue(s2.promptTokens > s1.promptTokens + s1.generatedTokens, "$s1 $s2")
            assertTrue(s2.cachedPromptTokens >= s1.promptTokens, "$s2")
        }
    }

    @Test
    fun `send is refused unless a model is idle`() {
        Harness(settings).use { h ->
            assertFalse(h.onMain { send("Hello") }, "no model yet")
            h.onMain { load(Fixtures.smolLm2) }
            h.awaitState<ChatState.Ready>()
            assertFalse(h.onMain { send("   ") }, "blank message")
            assertTrue(h.onMain { send("Hello") })
            assertFalse(h.onMain { send("Hello again") }, "an answer is in progress")
            h.awaitState<ChatState.Ready> { it.transcript.size == 1 }
            assertTrue(h.onMain { newChat() })
            assertEquals(ChatState.Ready::class, h.controller.state.value::class)
            assertTrue((h.controller.state.value as ChatState.Ready).transcript.isEmpty())
        }
    }
}
