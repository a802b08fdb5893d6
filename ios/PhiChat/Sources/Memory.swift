import Foundation
import os
import PhiMobileChat

/// What the app may still allocate before iOS's memory limit (jetsam) ends it.
enum Memory {
    /// os_proc_available_memory(): the current limit minus the app's footprint.
    /// Advisory and changing (other apps, thermal state): read it, don't cache it.
    static var availableBytes: Int64 { Int64(os_proc_available_memory()) }

    /// Large models get a short context. The KV cache (f16) grows with the
    /// conversation in 256-token steps: Phi-3-mini (32 layers, 32 KV heads of
    /// 96) needs 384 KiB per token, 0.4 GB at 1024 tokens and 1.6 GB at its
    /// full 4096 (`ModelInfo.kvBytesPerToken` once loaded); Phi-4-mini, with
    /// 8 KV heads of 128, a third of that.
    static func contextLength(forFileBytes fileBytes: Int64) -> Int32 {
        fileBytes >= large ? 1024 : 4096
    }

    /// What a chat with the model at `path` adds to the app's footprint at
    /// `contextLength` tokens; nil when its header can't be read (loading it
    /// will say why). The library's estimate (`estimateModelMemory`, from the
    /// file's header) counts the whole file, the KV cache and the working
    /// buffers. The weights are the mapped file: clean pages iOS can drop and
    /// re-read, not counted against the limit, but every token reads them, so
    /// a fifth of them is kept as room for them to stay resident.
    static func footprintBytes(ofModelAt path: String, fileBytes: Int64, contextLength: Int32) async -> Int64? {
        // A few KB of file reads, but not on the main actor.
        let estimate = await Task.detached {
            try? estimateModelMemory(modelPath: path, contextLength: contextLength)
        }.value
        guard let estimate else { return nil }
        return estimate - min(estimate, fileBytes) + residentWeights(fileBytes: fileBytes)
    }

    /// Before a download only the file's size is known: the weights' resident
    /// share is a lower bound of the footprint (the load after the download
    /// adds the KV cache and buffers).
    static func residentWeights(fileBytes: Int64) -> Int64 { fileBytes / 5 }

    /// Whether a footprint of `needed` likely stays under the limit. `freed`
    /// is what loading releases first (the model it replaces). Unknown (0:
    /// the simulator, a Mac) counts as fitting.
    static func likelyFits(needed: Int64, freed: Int64 = 0) -> Bool {
        let available = availableBytes
        return available == 0 || needed < available + freed
    }

    private static let large: Int64 = 1 << 30

    static func format(_ bytes: Int64) -> String {
        ByteCountFormatter.string(fromByteCount: bytes, countStyle: .memory)
    }
}
