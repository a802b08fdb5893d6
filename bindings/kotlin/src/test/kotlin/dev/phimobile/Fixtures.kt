package dev.phimobile

import com.sun.jna.Library
import com.sun.jna.Native
import com.sun.jna.Structure
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.Paths

/** Paths handed in by scripts/test-kotlin.sh as system properties, and shared helpers. */
object Fixtures {
    private fun prop(name: String): String =
        System.getProperty(name) ?: error("system property $name is not set: run the suite with scripts/test-kotlin.sh")

    /** The repository root (for tests/data and the sources the usage-example test compares). */
    val repo: Path by lazy { Paths.get(prop("phimobile.repo")) }

    /** The synthetic Phi-3 model written by `cargo run --example synthetic_gguf -- reference`. */
    val referenceModelPath: String by lazy { prop("phimobile.referenceModel") }

    /** The Phi-3 tokenizer written by scripts/fetch-fixtures.sh. */
    val tokenizerPath: String by lazy { prop("phimobile.tokenizer") }

    val scratch: Path by lazy { Files.createTempDirectory("phi-mobile-kotlin-tests") }

    fun referenceConfig(contextLength: Int? = null): ModelConfig =
        ModelConfig(modelPath = referenceModelPath, tokenizerPath = tokenizerPath, contextLength = contextLength)

    /** The reference model, loaded once for the tests that do not close it. */
    val referenceModel: LanguageModel by lazy { LanguageModel.load(referenceConfig()) }

    /** Deterministic argmax decoding (what the Rust tests call `GenerationParams::greedy`). */
    fun greedy(maxTokens: Int): GenerationParams =
        GenerationParams(maxTokens = maxTokens, temperature = 0f, repeatPenalty = 1f)

    class ReferenceCase(val prompt: String, val promptIds: List<Int>, val expectedIds: List<Int>)

    /** A case of tests/data/reference_phi3.json (the ids transformers computed on the same weights). */
    fun referenceCase(name: String): ReferenceCase {
        val json = Files.readString(repo.resolve("tests/data/reference_phi3.json"))
        val case = Regex(
            """"name":\s*"${Regex.escape(name)}".*?"prompt_ids":\s*\[([^\]]*)\].*?"expected_ids":\s*\[([^\]]*)\].*?"prompt":\s*"((?:[^"\\]|\\.)*)"""",
            RegexOption.DOT_MATCHES_ALL,
        ).find(json) ?: error("case $name not found in reference_phi3.json")
        fun ids(s: String) = s.split(',').map { it.trim() }.filter { it.isNotEmpty() }.map { it.toInt() }
        val (promptIds, expected, prompt) = case.destructured
        require(!prompt.contains('\\')) { "escaped prompts are not supported by this little parser" }
        return ReferenceCase(prompt, ids(promptIds), ids(expected))
    }

    /** A minimal valid GGUF v3 file: no tensors, one metadata key `general.architecture`. */
    fun writeGguf(name: String, architecture: String): Path {
        val key = "general.architecture".toByteArray()
        val value = architecture.toByteArray()
        val buf = ByteBuffer.allocate(4 + 4 + 8 + 8 + 8 + key.size + 4 + 8 + value.size).order(ByteOrder.LITTLE_ENDIAN)
        buf.put("GGUF".toByteArray()).putInt(3).putLong(0).putLong(1)
        buf.putLong(key.size.toLong()).put(key)
        buf.putInt(8) // GGUF value type: string
        buf.putLong(value.size.toLong()).put(value)
        return scratchFile(name, buf.array())
    }

    fun scratchFile(name: String, bytes: ByteArray): Path = scratch.resolve(name).also { Files.write(it, bytes) }

    /** The process's resident set size in kB (Linux). */
    fun rssKb(): Long =
        Files.readAllLines(Paths.get("/proc/self/status"))
            .first { it.startsWith("VmRSS:") }
            .split(Regex("\\s+"))[1]
            .toLong()

    /** glibc's malloc, through JNA: for the memory test only. */
    object Malloc {
        @Structure.FieldOrder("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
        open class Info : Structure() {
            @JvmField var arena: Long = 0
            @JvmField var ordblks: Long = 0
            @JvmField var smblks: Long = 0
            @JvmField var hblks: Long = 0
            @JvmField var hblkhd: Long = 0
            @JvmField var usmblks: Long = 0
            @JvmField var fsmblks: Long = 0
            @JvmField var uordblks: Long = 0
            @JvmField var fordblks: Long = 0
            @JvmField var keepcost: Long = 0

            class ByValue : Info(), Structure.ByValue
        }

        @Suppress("FunctionName")
        interface LibC : Library {
            fun mallinfo2(): Info.ByValue
            fun malloc_trim(pad: Long): Int
        }

        private val libc: LibC? = try {
            Native.load("c", LibC::class.java)
        } catch (e: UnsatisfiedLinkError) {
            null
        }

        /** Returns free arena pages to the OS, so RSS shows what is in use (no-op without glibc). */
        fun trim() {
            libc?.malloc_trim(0)
        }

        /** Bytes malloc has handed out and not got back (null without glibc). */
        fun inUseBytes(): Long? = libc?.mallinfo2()?.let { it.uordblks + it.hblkhd }
    }
}
