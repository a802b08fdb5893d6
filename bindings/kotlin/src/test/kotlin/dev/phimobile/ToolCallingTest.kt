package dev.phimobile

import dev.phimobile.Fixtures.referenceModel
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertTrue
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

/**
 * Tool calls in the Flow of events, from Kotlin. The reference model's weights are random: the
 * calls are forced with [ToolChoice.REQUIRED], their arguments by the schema.
 */
@Timeout(120)
class ToolCallingTest {
    private val add = Tool(
        "add", "Adds two small integers.",
        """{"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9},
            "y": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["x", "y"], "additionalProperties": false}""",
    )
    private val call = Regex("""\{"x": [0-9], "y": [0-9]\}""")

    @Test
    fun `calls arrive typed before Done and the chat goes on with their results`() = runBlocking {
        referenceModel.newToolSession(tools = listOf(add)).use { chat ->
            val required = GenerationParams(seed = 7, toolChoice = ToolChoice.REQUIRED)
            val events = chat.streamEvents("Add 2 and 3", required).toList()
            val done = assertIs<GenerationEvent.Done>(events.last())
            val calls = assertIs<GenerationEvent.ToolCalls>(events[events.size - 2]).calls
            assertEquals(StopReason.TOOL_CALLS, done.stats.stopReason)
            assertEquals(done.stats.toolCalls, calls)
            assertTrue(calls.isNotEmpty() && calls.all { it.name == "add" && call.matches(it.arguments) }, "$calls")
            assertEquals(calls, chat.history().last().toolCalls)

            val results = calls.map { """{"sum": 5}""" }
            val next = chat.streamToolResults(results, GenerationParams(maxTokens = 8, toolChoice = ToolChoice.TEXT_ONLY))
                .toList()
            assertTrue(next.none { it is GenerationEvent.ToolCalls })
            val stats = assertIs<GenerationEvent.Done>(next.last()).stats
            assertTrue(stats.cachedPromptTokens >= done.stats.promptTokens, "the cache is reused")
            assertEquals(
                listOf(Role.USER, Role.ASSISTANT) + calls.map { Role.TOOL } + Role.ASSISTANT,
                chat.history().map { it.role },
            )
        }
    }

    @Test
    fun `bad tools and unmatched results are InvalidParameter`() = runBlocking {
        val badName = assertFailsWith<LlmException.InvalidParameter> {
            referenceModel.newToolSession(tools = listOf(Tool("has space", "", "{}")))
        }
        assertEquals("tools", badName.name)
        val notObject = assertFailsWith<LlmException.InvalidParameter> {
            referenceModel.newToolSession(tools = listOf(Tool("a", "", """{"type": "string"}""")))
        }
        assertTrue("object" in notObject.reason, notObject.reason)
        referenceModel.newToolSession(tools = listOf(add)).use { chat ->
            val e = assertFailsWith<LlmException.InvalidParameter> { chat.streamToolResults(listOf("3")).toList() }
            assertEquals("results", e.name)
        }
    }
}
