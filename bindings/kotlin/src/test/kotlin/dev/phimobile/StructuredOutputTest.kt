package dev.phimobile

import dev.phimobile.Fixtures.referenceModel
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * `respond` with a response format, from Kotlin. The reference model's weights are random, so
 * whatever it prefers, only the mask makes its answers valid.
 */
@Timeout(120)
class StructuredOutputTest {
    private val digit = """{"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["n"], "additionalProperties": false}"""

    private fun params(seed: Long) = GenerationParams(maxTokens = 40, temperature = 1f, seed = seed)

    @Test
    fun `respond parses an answer valid for its schema, at any seed`() = runBlocking {
        for (seed in 1L..4L) {
            val session = referenceModel.newSession(emptyList())
            val n = session.respond("A digit as JSON", ResponseFormat.JsonSchema(digit), params(seed)) { text ->
                val match = Regex("""\{"n": ([1-9])\}""").matchEntire(text) ?: error("not the schema's shape: $text")
                match.groupValues[1].toInt()
            }
            assertTrue(n in 1..9)
            assertEquals(listOf(Role.USER, Role.ASSISTANT), session.history().map { it.role })
        }
    }

    @Test
    fun `a regex answer matches whole`() = runBlocking {
        val session = referenceModel.newSession(emptyList())
        val code = session.respond("A code", ResponseFormat.Regex("[A-Z]{2}-[0-9]{3}"), params(7)) { it }
        assertTrue(Regex("[A-Z]{2}-[0-9]{3}").matches(code), code)
        assertEquals(session.history().last().content, code)
    }

    @Test
    fun `an answer cut short is IncompleteAnswer with its partial text`() = runBlocking {
        val session = referenceModel.newSession(emptyList())
        val e = assertFailsWith<LlmException.IncompleteAnswer> {
            session.respond("A digit", ResponseFormat.JsonSchema(digit), params(1).copy(maxTokens = 2)) { it }
        }
        assertEquals(StopReason.MAX_TOKENS, e.stopReason)
        assertTrue(e.partial.startsWith("{"), e.partial)
        assertEquals(e.partial, session.history().last().content)
    }

    @Test
    fun `a schema that does not compile is InvalidParameter naming response_format`() = runBlocking {
        val session = referenceModel.newSession(emptyList())
        val e = assertFailsWith<LlmException.InvalidParameter> {
            session.respond("x", ResponseFormat.JsonSchema("""{"type": "array", "uniqueItems": true}"""), params(1)) { it }
        }
        assertEquals("response_format", e.name)
        assertTrue("uniqueItems" in e.reason, e.reason)
    }

    @Test
    fun `an exception thrown by parse is rethrown as is`() = runBlocking {
        class Unparsable : Exception()
        assertFailsWith<Unparsable> {
            referenceModel.newSession(emptyList()).respond("x", ResponseFormat.JsonSchema(digit), params(2)) { throw Unparsable() }
        }
        Unit
    }
}
