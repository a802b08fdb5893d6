package dev.phimobile.chat

import dev.phimobile.GenerationResult
import dev.phimobile.ModelInfo
import dev.phimobile.StopReason

/**
 * What the chat screen shows: exactly one of these at a time, published by [ChatController.state].
 *
 * The usual path is NoModel → Downloading (download or import) → Loading → Ready ⇄ Generating,
 * with Error reachable from every step but NoModel.
 */
sealed interface ChatState {
    /** Nothing loaded: the screen offers to download or import a model. */
    data object NoModel : ChatState

    /**
     * A model file is being fetched ([Source.DOWNLOAD]) or copied into app storage
     * ([Source.IMPORT]). [totalBytes] is 0 while the size is unknown.
     */
    data class Downloading(val bytesDone: Long, val totalBytes: Long, val source: Source) : ChatState {
        enum class Source { DOWNLOAD, IMPORT }

        /** 0..1, or null while the size is unknown (show an indeterminate bar). */
        val fraction: Float? get() = if (totalBytes > 0) (bytesDone.toDouble() / totalBytes).toFloat().coerceIn(0f, 1f) else null
    }

    /** The weights are being read; [progress] is 0..1 of the file. */
    data class Loading(val path: String, val progress: Float) : ChatState

    /** A model is loaded and idle; [transcript] holds the finished turns, oldest first. */
    data class Ready(val model: LoadedModel, val transcript: List<Turn>) : ChatState

    /** An answer to [prompt] is streaming in; [partial] is the text so far. */
    data class Generating(
        val model: LoadedModel,
        val transcript: List<Turn>,
        val prompt: String,
        val partial: String,
    ) : ChatState

    /**
     * Something failed. When [recoverable], [model] is still loaded and the chat can go on
     * ([ChatController.send] works again); otherwise there is no model and the user has to pick
     * one. [cause] is the typed failure (usually a [dev.phimobile.LlmException] subclass).
     * Recoverable errors also tell of the saved chat: it could not be restored, so a new chat
     * started ([dev.phimobile.LlmException.InvalidSavedChat] and others), or could not be saved.
     */
    data class Error(
        val message: String,
        val recoverable: Boolean,
        val cause: Throwable,
        val model: LoadedModel?,
        val transcript: List<Turn>,
    ) : ChatState
}

/** The model behind Ready/Generating states. */
data class LoadedModel(val path: String, val info: ModelInfo)

/**
 * One finished exchange. A stopped answer is kept, with [TurnStats.stopReason] CANCELLED.
 * [stats] is null for a turn restored from a saved chat (the file keeps the messages only).
 */
data class Turn(val user: String, val assistant: String, val stats: TurnStats?)

/** The numbers the screen shows under an answer, from the library's [GenerationResult]. */
data class TurnStats(
    val timeToFirstTokenMs: Double,
    val tokensPerSecond: Double,
    val promptTokens: Int,
    val cachedPromptTokens: Int,
    val generatedTokens: Int,
    val stopReason: StopReason,
) {
    companion object {
        fun of(stats: GenerationResult) = TurnStats(
            timeToFirstTokenMs = stats.timeToFirstTokenMs,
            tokensPerSecond = stats.decodeTokensPerSecond,
            promptTokens = stats.promptTokens,
            cachedPromptTokens = stats.cachedPromptTokens,
            generatedTokens = stats.generatedTokens,
            stopReason = stats.stopReason,
        )
    }
}
