import Foundation
import os

/// What the app may still allocate before iOS's memory limit (jetsam) ends it.
enum Memory {
    /// os_proc_available_memory(): the current limit minus the app's footprint.
    /// Advisory and changing (other apps, thermal state): read it, don't cache it.
    static var availableBytes: UInt64 { UInt64(os_proc_available_memory()) }

    /// A rough check before loading a model: the weights are read into memory
    /// (no mmap) and the token embedding is expanded, so a file needs about
    /// its own size plus a fifth, before any KV cache.
    /// `freed` is what loading releases first (the model it replaces).
    /// Unknown (0: the simulator, a Mac) counts as fitting.
    static func likelyFits(fileBytes: UInt64, freed: UInt64 = 0) -> Bool {
        let available = availableBytes
        return available == 0 || fileBytes + fileBytes / 5 < available + freed
    }

    static func format(_ bytes: UInt64) -> String {
        ByteCountFormatter.string(fromByteCount: Int64(bytes), countStyle: .memory)
    }
}
