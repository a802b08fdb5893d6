package dev.phimobile

import java.io.ByteArrayOutputStream
import java.io.PrintStream
import java.nio.file.Files
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

// BEGIN usage example (identical to the KDoc of loadModel in PhiMobile.kt; checked below)
suspend fun haikus(modelPath: String, tokenizerPath: String): List<String> =
    loadModel(ModelConfig(modelPath = modelPath, tokenizerPath = tokenizerPath)).use { model ->
        val params = GenerationParams(maxTokens = 48)
        model.newSession(listOf(ChatMessage(Role.SYSTEM, "Be brief."))).use { chat ->
            // A chat turn as a Flow<String>; collecting runs generation on Dispatchers.IO.
            val first = chat.stream("Write a haiku about ice hockey", params).toList().joinToString("")
            // The suspend form streams to a callback and returns the stats.
            val stats = chat.reply("Another, about chess", params) { piece -> print(piece) }
            println("\n${stats.decodeTokensPerSecond} tokens/s, stopped by ${stats.stopReason}")
            // Cancelling the collector (here by a timeout) stops generation within one token.
            withTimeoutOrNull(50) { chat.stream("One more", params).collect { print(it) } }
            listOf(first, stats.text)
        }
    }
// END usage example

@Timeout(120)
class UsageExampleTest {
    @Test
    fun `the KDoc usage example runs`() {
        val out = ByteArrayOutputStream()
        val stdout = System.out
        System.setOut(PrintStream(out, true, Charsets.UTF_8))
        val (first, second) = try {
            runBlocking { haikus(Fixtures.referenceModelPath, Fixtures.tokenizerPath) }
        } finally {
            System.setOut(stdout)
        }
        assertTrue(first.isNotEmpty() && second.isNotEmpty())
        val printed = out.toString(Charsets.UTF_8)
        assertTrue(printed.startsWith(second), printed)
        assertTrue(" tokens/s, stopped by MAX_TOKENS" in printed, printed)
    }

    @Test
    fun `the KDoc usage example is the code that runs`() {
        val kt = Fixtures.repo.resolve("bindings/kotlin/src")
        val kdoc = Files.readString(kt.resolve("main/kotlin/dev/phimobile/PhiMobile.kt"))
            .substringAfter(" * ```kotlin\n").substringBefore(" * ```\n")
            .lines().joinToString("\n") { it.removePrefix(" *").removePrefix(" ") }
        val test = Files.readString(kt.resolve("test/kotlin/dev/phimobile/UsageExampleTest.kt"))
            .substringAfter("// BEGIN usage example").substringAfter("\n").substringBefore("// END usage example")
        assertEquals(test.trimEnd(), kdoc.trimEnd())
    }
}
