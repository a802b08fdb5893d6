import Foundation
import os

/// What the app may still allocate before iOS's memory limit (jetsam) ends it.
enum Memory {
    /// os_proc_available_memory(): the current limit minus the app's footprint.
    /// Advisory and changing (other apps, thermal state): read it, don't cache it.
    static var availableBytes: UInt64 { UInt64(os_proc_available_memory()) }

    /// Large models get a short context. The KV cache is f32 and allocated in
    /// full at a conversation's first message: Phi-3-mini (32 layers, 32 KV
    /// heads of 96) needs 768 KiB per token, 0.75 GB at 1024 tokens and 3 GB
    /// at its full 4096 — more than the weights.
    static func contextLength(forFileBytes fileBytes: UInt64) -> UInt32 {
        fileBytes >= large ? 1024 : 4096
    }

    /// A rough, generous estimate of a model's footprint: the weights are read
    /// into memory (no mmap) and the token embedding is expanded to f32 (about
    /// a sixth more for Phi-3-mini Q4; a fifth leaves room), plus the KV cache
    /// at the context above.
    static func estimatedBytes(fileBytes: UInt64) -> UInt64 {
        let kvCache: UInt64 = fileBytes >= large ? 1024 * 768 * 1024 : 256 << 20
        return fileBytes + fileBytes / 5 + kvCache
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
