package dev.phimobile.chat

import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import kotlinx.coroutines.cancel
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/** Models are closed when replaced or when the controller closes; work stays off the main thread. */
@Timeout(180)
class LifecycleTest {
    private val settings = ChatSettings(params = Fixtures.greedy(400), contextLength = 1024)

    @Test
    fun `replacing the model closes the old one, also in the middle of an answer`() {
        Harness(settings).use { h ->
            h.onMain { load(Fixtures.smolLm2) }
            h.awaitState<ChatState.Ready> { it.model.path == Fixtures.smolLm2 }
            h.onMain { load(Fixtures.referenceModel, Fixtures.referenceTokenizer) }
            h.awaitState<ChatState.Ready> { it.model.path == Fixtures.referenceModel }
            assertEquals(2, h.loaded.size)
            assertTrue(h.loaded[0].uniffiIsDestroyed, "the first model was closed")
            assertFalse(h.loaded[1].uniffiIsDestroyed)

            // Mid-answer: the answer stops, its model is closed, the new one comes up empty.
            assertTrue(h.onMain { send("Tell me a very long story.") })
            h.awaitState<ChatState.Generating> { it.partial.length > 50 }
            h.onMain { load(Fixtures.smolLm2) }
            val ready = h.awaitState<ChatState.Ready> { it.model.path == Fixtures.smolLm2 }
            assertTrue(ready.transcript.isEmpty())
            assertTrue(h.loaded[1].uniffiIsDestroyed, "the model that was answering was closed")
            assertFalse(h.loaded[2].uniffiIsDestroyed)
            // The abandoned answer never surfaced as a finished turn or an error.
            assertTrue(h.states.none { it is ChatState.Error })
            assertTrue(h.states.filterIsInstance<ChatState.Ready>().all { it.transcript.isEmpty() })

            h.onMain { unload() }
            assertEquals(ChatState.NoModel, h.controller.state.value)
            val deadline = System.nanoTime() + 10_000_000_000
            while (!h.loaded[2].uniffiIsDestroyed && System.nanoTime() < deadline) Thread.sleep(10)
            assertTrue(h.loaded[2].uniffiIsDestroyed, "unload() closes the model")

            h.onMain { load(Fixtures.smolLm2) }
            h.awaitState<ChatState.Ready>()
            h.controller.close()
            assertTrue(h.loaded[3].uniffiIsDestroyed, "close() closes the current model")
            assertEquals(ChatState.NoModel, h.controller.state.value)
            assertFalse(h.onMain { send("Hello") })
        }
    }

    @Test
    fun `close after the scope is cancelled (as in onCleared) still frees the model, also mid-answer`() {
        Harness(settings).use { h ->
            h.onMain { load(Fixtures.referenceModel, Fixtures.referenceTokenizer) }
            h.awaitState<ChatState.Ready>()
            assertTrue(h.onMain { send("Tell me a very long story.") })
            h.awaitState<ChatState.Generating> { it.partial.isNotEmpty() }
            // viewModelScope is cancelled before onCleared() runs.
            h.scope.cancel()
            h.controller.close()
            assertTrue(h.loaded.single().uniffiIsDestroyed)
            assertEquals(ChatState.NoModel, h.controller.state.value)
        }
    }

    @Test
    fun `loading and generating never block the main thread`() {
        // SmolLM2 here: a real model is slow enough on a CPU that the answer outlasts the probes.
        Harness(settings).use { h ->
            h.onMain { load(Fixtures.smolLm2) }
            h.awaitState<ChatState.Ready>()
            assertTrue(h.loaderThreads.none { it == Harness.MAIN_THREAD }, "${h.loaderThreads}")

            assertTrue(h.onMain { send("Tell me a very long story.") })
            h.awaitState<ChatState.Generating> { it.partial.isNotEmpty() }
            // While the answer is being generated, the main thread keeps answering promptly.
            val roundTrips = mutableListOf<Double>()
            var sawGenerating = 0
            repeat(20) {
                val t = System.nanoTime()
                val state = runBlocking { withContext(h.main) { h.controller.state.value } }
                roundTrips += (System.nanoTime() - t) / 1e6
                if (state is ChatState.Generating) sawGenerating++
                Thread.sleep(5)
            }
            h.onMain { stop() }
            h.awaitState<ChatState.Ready>()
            println("main-thread round trips while generating: max ${"%.1f".format(roundTrips.max())} ms")
            assertTrue(sawGenerating >= 5, "generation ended too soon to tell ($sawGenerating samples)")
            // Generation on the main thread would hold it for the whole answer (seconds); the bound
            // leaves room for a loaded CI machine.
            assertTrue(roundTrips.max() < 1000.0, "main thread blocked: $roundTrips")
        }
    }
}
