import Foundation
import os

/// What the app may still allocate before iOS's memory limit (jetsam) ends it.
enum Memory {
    /// os_proc_available_memory(): the current limit minus the app's footprint.
    /// Advisory and changing (other apps, thermal state): read it, don't cache it.
    static var availableBytes: UInt64 { UInt64(os_proc_available_memory()) }

    /// Large models get a short context. The KV cache (f16) grows with the
    /// conversation in 256-token steps: Phi-3-mini (32 layers, 32 KV heads of
    /// 96) needs 384 KiB per token, 0.4 GB at 1024 tokens and 1.6 GB at its
    /// full 4096 (`ModelInfo.kvBytesPerToken` once loaded).
    static func contextLength(forFileBytes fileBytes: UInt64) -> UInt32 {
        fileBytes >= large ? 1024 : 4096
    }

    /// A rough, generous estimate of what a model adds to the app's footprint,
    /// before it is loaded (after, `Model.memoryEstimateBytes(contextLength:)`
    /// gives the whole). The weights are the mapped file: clean pages iOS can
    /// drop and re-read, not counted against the limit, but every token reads
    /// them, so a fifth of them is kept as room for them to stay resident.
    /// Then the KV cache at the context above and the working buffers (Phi-3-mini
    /// measured 0.26 GB of its own memory with a 200-token chat).
    static func estimatedBytes(fileBytes: UInt64) -> UInt64 {
        let kvCache: UInt64 = fileBytes >= large ? 1024 * 384 * 1024 : 128 << 20
        return fileBytes / 5 + kvCache + (256 << 20)
    }

    /// Whether loading a model likely stays under the limit. `freed` is what
    /// loading releases first (the model it replaces). Unknown (0: the
    /// simulator, a Mac) counts as fitting.
    static func likelyFits(fileBytes: UInt64, freed: UInt64 = 0) -> Bool {
        let available = availableBytes
        return available == 0 || estimatedBytes(fileBytes: fileBytes) < available + freed
    }

    private static let large: UInt64 = 1 << 30

    static func format(_ bytes: UInt64) -> String {
        ByteCountFormatter.string(fromByteCount: Int64(bytes), countStyle: .memory)
    }
}
