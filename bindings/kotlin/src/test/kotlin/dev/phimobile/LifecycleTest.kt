package dev.phimobile

import dev.phimobile.Fixtures.greedy
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import kotlinx.coroutines.async
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout

@Timeout(300)
class LifecycleTest {
    private fun assertDestroyed(what: String, block: suspend () -> Unit) {
        val e = assertFailsWith<IllegalStateException>(what) { runBlocking { block() } }
        assertTrue("has already been destroyed" in (e.message ?: ""), "$what: ${e.message}")
    }

    @Test
    fun `using a closed model or session gives a clear exception`() = runBlocking {
        val model = loadModel(Fixtures.referenceConfig())
        val session = model.newSession(emptyList())
        model.use { assertEquals("phi3", it.info().architecture) }
        assertTrue(model.uniffiIsDestroyed)
        model.close() // twice is fine
        assertDestroyed("info") { model.info() }
        assertDestroyed("tokenize") { model.tokenize("Hi") }
        assertDestroyed("newSession") { model.newSession(emptyList()) }
        assertDestroyed("stream") { model.stream("Hi", greedy(4)).toList() }
        assertDestroyed("complete") { model.complete("Hi", greedy(4)) }

        // A session keeps the weights alive after its model is closed, until it is closed too.
        assertEquals(StopReason.MAX_TOKENS, session.reply("Hi", greedy(4)).stopReason)
        session.close()
        assertDestroyed("reply") { session.reply("Hi", greedy(4)) }
        assertDestroyed("stream") { session.stream("Hi", greedy(4)).toList() }
        assertDestroyed("history") { session.history() }
    }

    @Test
    fun `closing a model while it generates lets the generation finish`() = runBlocking {
        val model = loadModel(Fixtures.referenceConfig())
        val firstPiece = kotlinx.coroutines.CompletableDeferred<Unit>()
        val running = async {
            model.complete("Hello, world", greedy(32)) { firstPiece.complete(Unit) }
        }
        firstPiece.await()
        model.close()
        assertEquals(Fixtures.referenceCase("hello").expectedIds, running.await().tokenIds)
        assertDestroyed("after the in-flight call") { model.info() }
    }

    /**
     * Memory after 100 load/use/close cycles, against memory after a warm-up. No leak means flat.
     *
     * RSS also counts memory nobody leaked, so scripts/test-kotlin.sh runs the JVM with
     * - MALLOC_ARENA_MAX=1: with glibc's default of up to 8 arenas per core, every Dispatchers.IO
     *   worker that happens to load a model keeps a model's worth of freed buffers in its own
     *   arena, and RSS climbs in 16-40 MB steps for the first 50-200 cycles while malloc's
     *   in-use bytes stay flat (measured);
     * - -Xms128m -XX:+AlwaysPreTouch: else RSS creeps up by ~7-10 MB as G1 first touches pages
     *   of heap it had already committed;
     * - -XX:TieredStopAtLevel=1: C2's compiler arenas (malloc'd) come and go in ~12 MB steps.
     * Each sample is taken after GC and malloc_trim, and the lowest of five is compared, to damp
     * the few MB of noise from the JIT and GC. Malloc's in-use bytes are reported alongside.
     */
    @Test
    fun `100 load-close cycles do not grow RSS by more than 5 percent`() = runBlocking {
        suspend fun cycle() {
            loadModel(Fixtures.referenceConfig()).use { model ->
                model.newSession(emptyList()).use { chat -> chat.reply("Hi", greedy(4)) }
            }
        }
        fun settledRss(): Long {
            repeat(3) {
                System.gc()
                Thread.sleep(30)
            }
            Fixtures.Malloc.trim()
            return Fixtures.rssKb()
        }
        class Sample(val rssKb: Long, val inUse: Long?)
        suspend fun floorOf5(): List<Sample> = List(5) {
            cycle()
            Sample(settledRss(), Fixtures.Malloc.inUseBytes())
        }
        fun mb(bytes: Long?) = bytes?.let { "${it / (1 shl 20)}" } ?: "n/a"
        fun show(s: List<Sample>) = s.joinToString(prefix = "[", postfix = "]") { "${it.rssKb / 1024}/${mb(it.inUse)}" }

        repeat(40) { cycle() } // warm-up: JIT, heap sizing, allocator
        val before = floorOf5()
        repeat(95) { cycle() }
        val after = floorOf5() // cycles 96..100
        // The floor: transient allocations (JIT, GC) only ever add to a sample; a leak raises all.
        val (b, a) = before.minOf { it.rssKb } to after.minOf { it.rssKb }
        val growth = (a - b).toDouble() / b
        val report = "RSS after warm-up $b kB, after 100 more cycles $a kB (${"%+.2f".format(growth * 100)} %); " +
            "samples RSS/malloc-in-use MB ${show(before)} -> ${show(after)}; MALLOC_ARENA_MAX=${System.getenv("MALLOC_ARENA_MAX")}"
        println(report)
        assertTrue(growth <= 0.05, report)
    }
}
