package dev.phimobile

import dev.phimobile.Fixtures.greedy
import dev.phimobile.Fixtures.referenceModel
import kotlin.test.assertEquals
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(120)
class ConcurrencyTest {
    private val conversations = listOf(
        listOf("Write a haiku about ice hockey.", "Now one about chess."),
        listOf("What is the capital of France?", "And of Italy?"),
    )

    /** Two greedy turns in a fresh session; [onFirstPiece] runs at the first piece of the first turn. */
    private suspend fun converse(turns: List<String>, onFirstPiece: suspend () -> Unit = {}): List<GenerationResult> =
        referenceModel.newSession(listOf(ChatMessage(Role.SYSTEM, "You are a helpful assistant."))).use { chat ->
            var first = true
            turns.map { turn ->
                chat.reply(turn, greedy(24)) {
                    if (first) {
                        first = false
                        onFirstPiece()
                    }
                }
            }
        }

    @Test
    fun `two coroutines with their own sessions on one model match sequential runs`() = runBlocking {
        val sequential = conversations.map { converse(it) }
        // Each coroutine parks at its first piece until both have one, so the two generations
        // are provably in flight at the same time.
        val arrived = List(2) { CompletableDeferred<Unit>() }
        val concurrent = conversations.mapIndexed { i, turns ->
            async(Dispatchers.Default) {
                converse(turns) {
                    arrived[i].complete(Unit)
                    arrived.awaitAll()
                }
            }
        }.awaitAll()
        for (i in conversations.indices) {
            assertEquals(sequential[i].map { it.tokenIds }, concurrent[i].map { it.tokenIds })
            assertEquals(sequential[i].map { it.text }, concurrent[i].map { it.text })
        }
    }
}
