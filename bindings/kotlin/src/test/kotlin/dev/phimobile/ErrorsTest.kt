package dev.phimobile

import dev.phimobile.Fixtures.greedy
import dev.phimobile.Fixtures.referenceModel
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * Every LlmException variant a Kotlin caller can meet. `Inference` is the exception: it reports
 * a failure inside candle's math (or a caught panic) and no valid input produces one, so it
 * cannot be reached from here; `describe` below at least keeps the `when` over all variants
 * exhaustive, so a new variant fails to compile until it is handled.
 */
@Timeout(120)
class ErrorsTest {
    private fun load(config: ModelConfig): LanguageModel = runBlocking { loadModel(config) }

    private fun describe(e: LlmException): String = when (e) {
        is LlmException.ModelNotFound -> "not found: ${e.what}"
        is LlmException.InvalidModel -> "invalid model: ${e.reason}"
        is LlmException.UnsupportedArchitecture -> "unsupported: ${e.architecture}"
        is LlmException.Tokenizer -> "tokenizer: ${e.reason}"
        is LlmException.InvalidParameter -> "parameter ${e.name}: ${e.reason}"
        is LlmException.ContextOverflow -> "needs ${e.needed} of ${e.available}"
        is LlmException.Callback -> "callback: ${e.reason}"
        is LlmException.Inference -> "inference: ${e.reason}"
        is LlmException.Network -> "network: ${e.reason}"
        is LlmException.Storage -> "storage: ${e.reason}"
        is LlmException.AccessDenied -> "access denied: ${e.reason}"
        is LlmException.Busy -> "busy: ${e.reason}"
        is LlmException.InvalidSavedChat -> "saved chat: ${e.reason}"
        is LlmException.Cancelled -> "cancelled"
        is LlmException.IncompleteAnswer -> "cut short (${e.stopReason}): ${e.partial}"
    }

    @Test
    fun `IncompleteAnswer for a respond cut short by maxTokens`() = runBlocking {
        val e = assertFailsWith<LlmException.IncompleteAnswer> {
            referenceModel.newSession(emptyList()).respond("Hi", greedy(1))
        }
        assertEquals(StopReason.MAX_TOKENS, e.stopReason)
        assertEquals("cut short (MAX_TOKENS): ${e.partial}", describe(e))
    }

    @Test
    fun `ModelNotFound for a missing file`() {
        val e = assertFailsWith<LlmException.ModelNotFound> {
            load(ModelConfig(modelPath = "/nonexistent/model.gguf", tokenizerPath = Fixtures.tokenizerPath))
        }
        assertEquals("/nonexistent/model.gguf", e.what)
        assertEquals("not found: /nonexistent/model.gguf", describe(e))
        // The Rust sentence, written once in src/ffi/error.rs (tests/bad_input.rs checks the same words).
        assertEquals("Model not found: /nonexistent/model.gguf.", e.toString())
        assertEquals(e.toString(), e.message)
    }

    @Test
    fun `InvalidModel for an empty file`() {
        val empty = Fixtures.scratchFile("empty.gguf", ByteArray(0))
        val e = assertFailsWith<LlmException.InvalidModel> { load(ModelConfig(modelPath = empty.toString())) }
        assertTrue("empty" in e.reason, e.reason)
        assertEquals("invalid model: ${e.reason}", describe(e))
    }

    @Test
    fun `UnsupportedArchitecture for a GGUF written here with another architecture`() {
        // An encoder-only architecture: never a chat model, so this stays unsupported.
        val bert = Fixtures.writeGguf("bert.gguf", "bert")
        val e = assertFailsWith<LlmException.UnsupportedArchitecture> {
            load(ModelConfig(modelPath = bert.toString(), tokenizerPath = Fixtures.tokenizerPath))
        }
        assertEquals("bert", e.architecture)
    }

    @Test
    fun `Tokenizer for a tokenizer file that is not JSON`() {
        val broken = Fixtures.scratchFile("broken-tokenizer.json", "{ not json".toByteArray())
        val e = assertFailsWith<LlmException.Tokenizer> {
            load(ModelConfig(modelPath = Fixtures.referenceModelPath, tokenizerPath = broken.toString()))
        }
        assertEquals("tokenizer: ${e.reason}", describe(e))
    }

    @Test
    fun `InvalidParameter for a negative count, at load and through every generation entry point`() = runBlocking {
        // Counts are signed Ints in Kotlin; a negative one is refused by name, not wrapped around.
        val ctx = assertFailsWith<LlmException.InvalidParameter> { load(Fixtures.referenceConfig(contextLength = -1)) }
        assertEquals("context_length", ctx.name)
        val params = GenerationParams(maxTokens = -1)
        // The flow throws from collect, the suspend forms from the call.
        val a = assertFailsWith<LlmException.InvalidParameter> { referenceModel.stream("Hi", params).toList() }
        val b = assertFailsWith<LlmException.InvalidParameter> { referenceModel.complete("Hi", params) }
        val c = referenceModel.newSession(emptyList()).use { chat ->
            assertFailsWith<LlmException.InvalidParameter> { chat.reply("Hi", params) }
        }
        assertEquals(listOf("max_tokens", "max_tokens", "max_tokens"), listOf(a.name, b.name, c.name), describe(a))
        assertEquals("Invalid parameter max_tokens: must not be negative, got -1.", a.message)
    }

    @Test
    fun `ContextOverflow for a prompt longer than a 16-token context`() = runBlocking {
        loadModel(Fixtures.referenceConfig(contextLength = 16)).use { model ->
            assertEquals(16, model.info().contextLength)
            val prompt = "This prompt is certainly longer than sixteen tokens of the Phi-3 vocabulary, by a margin."
            val e = assertFailsWith<LlmException.ContextOverflow> { model.complete(prompt, greedy(4)) }
            assertEquals(16, e.available)
            assertEquals(model.tokenize(prompt).size, e.needed)
            assertFailsWith<LlmException.ContextOverflow> {
                model.newSession(emptyList()).use { it.stream(prompt, greedy(4)).toList() }
            }
            // A short prompt still fits, and generation stops when the context is full.
            assertEquals(StopReason.CONTEXT_FULL, model.complete("Hi", greedy(100)).stopReason)
        }
    }

    @Test
    fun `Callback for a throwing TokenSink, and the model still works`() {
        val case = Fixtures.referenceCase("hello")
        val throwing = object : TokenSink {
            override fun onText(piece: String): Boolean = throw IllegalStateException("sink exploded")
        }
        val e = assertFailsWith<LlmException.Callback> { referenceModel.generate(case.prompt, greedy(32), throwing) }
        assertTrue("sink exploded" in e.reason, e.reason)
        referenceModel.newSession(emptyList()).use { chat ->
            assertFailsWith<LlmException.Callback> { chat.send("Hi", greedy(8), throwing) }
            assertEquals(StopReason.MAX_TOKENS, chat.send("Hi", greedy(8), object : TokenSink {
                override fun onText(piece: String) = true
            }).stopReason)
        }
        // Same model, same greedy ids as before the failure.
        val again = runBlocking { referenceModel.complete(case.prompt, greedy(32)) }
        assertEquals(case.expectedIds, again.tokenIds)
    }

    @Test
    fun `an exception thrown by an onText callback is rethrown as is and stops generation`() = runBlocking {
        class Boom : RuntimeException("boom")
        var pieces = 0
        assertFailsWith<Boom> {
            referenceModel.complete("Hello, world", greedy(200)) { if (++pieces == 2) throw Boom() }
        }
        assertEquals(2, pieces)
        val case = Fixtures.referenceCase("hello")
        assertEquals(case.expectedIds, referenceModel.complete(case.prompt, greedy(32)).tokenIds)
    }
}
