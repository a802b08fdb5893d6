package dev.phimobile

import dev.phimobile.Fixtures.greedy
import dev.phimobile.Fixtures.referenceModel
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/** Token counts are what the calls that feed the model feed (the generated calls, from Kotlin). */
@Timeout(120)
class TokenCountTest {
    private val text = "Emoji 👩‍💻 and 日本語<|end|>"
    private val chat = listOf(ChatMessage(Role.SYSTEM, "You are terse."), ChatMessage(Role.USER, text))

    @Test
    fun `countTokens is the prompt a generate feeds`() = runBlocking {
        val model = referenceModel
        assertEquals(model.tokenize(text).size, model.countTokens(text))
        assertEquals(model.countTokens(text), model.complete(text, greedy(1)).promptTokens)
    }

    @Test
    fun `countChatTokens of the history plus a message is that turn's prompt`() = runBlocking {
        val session = referenceModel.newSession(listOf(ChatMessage(Role.SYSTEM, "You are terse.")))
        session.reply("Hi there", greedy(4))
        val next = session.history() + ChatMessage(Role.USER, "And <|user|> then?")
        val counted = referenceModel.countChatTokens(next)
        assertEquals(counted, session.reply("And <|user|> then?", greedy(4)).promptTokens)
        assertEquals(counted, referenceModel.tokenizeChat(next).size)
    }

    @Test
    fun `a ModelTokenizer reads only the header and agrees with the model`() {
        val alone = ModelTokenizer.load(Fixtures.referenceModelPath, Fixtures.tokenizerPath)
        assertEquals(referenceModel.tokenize(text), alone.tokenize(text))
        assertEquals(referenceModel.countTokens(text), alone.countTokens(text))
        assertFailsWith<LlmException.ModelNotFound> { ModelTokenizer.load("/nonexistent/model.gguf", null) }
    }

    @Test
    fun `loadTokenizer is the blocking load as a suspend call, failures included`() = runBlocking {
        loadTokenizer(Fixtures.referenceModelPath, Fixtures.tokenizerPath).use { alone ->
            assertEquals(referenceModel.countChatTokens(chat), alone.countChatTokens(chat))
        }
        val onIo = assertFailsWith<LlmException.ModelNotFound> { loadTokenizer("/nonexistent/model.gguf") }
        assertEquals(
            assertFailsWith<LlmException.ModelNotFound> { ModelTokenizer.load("/nonexistent/model.gguf", null) }.message,
            onIo.message,
        )
    }
}
