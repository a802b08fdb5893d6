import Foundation
import PhiMobile

/// Where a chat is: what a UI shows and which operations make sense.
///
/// ```
/// noModel ──load/import/download──▶ importing / downloading ──▶ loading ──▶ ready
/// ready ──send──▶ generating(partial) ──done / stop──▶ ready
/// any failure ──▶ error (a loaded model stays loaded: send still works)
/// ```
public enum ChatState: Sendable, Equatable {
    /// No model is loaded.
    case noModel
    /// A picked model file is being copied into the app's storage.
    case importing(fileName: String)
    /// A model file is being downloaded; `total` is 0 until the server says.
    case downloading(done: Int64, total: Int64)
    /// A model file is being read; `progress` goes from 0 to 1.
    case loading(progress: Double)
    /// A model is loaded and no answer is being generated.
    case ready
    /// An answer is being generated; `partial` is its text so far.
    case generating(partial: String)
    /// The last operation failed. If a model is still loaded
    /// (``ChatSnapshot/model`` is not nil), sending works again.
    case error(ChatError)
}

/// Why an operation failed.
public enum ChatError: Error, Sendable, Equatable {
    /// From the library: a missing or corrupt model file, a prompt past the
    /// context, a network failure while downloading, ...
    case llm(LlmError)
    /// Copying a picked model file into the app's storage failed.
    case file(String)
    /// Saving the conversation to the chat file failed (`.storage`: no
    /// room, no permission). The chat goes on; the next turn tries again.
    case chatNotSaved(LlmError)
    /// The chat file could not be restored, so a new chat was started:
    /// `.invalidSavedChat` (another model's, or damaged; the file was
    /// deleted) or `.storage` (the OS refused to read it).
    case chatNotRestored(LlmError)

    /// A sentence for the user.
    public var message: String {
        switch self {
        case .file(let reason):
            return "Could not copy the model file: \(reason)"
        case .llm(let error):
            return Self.describe(error)
        case .chatNotSaved(let error):
            return "The chat could not be saved (\(Self.reason(error))). It goes on; the next answer tries again."
        case .chatNotRestored(let error):
            return "The last chat could not be restored (\(Self.reason(error))). A new chat was started."
        }
    }

    /// The library's own sentence (its Rust `Display`).
    private static func describe(_ error: LlmError) -> String { error.description }

    /// The library's own words for the chat file's errors, to quote in a sentence.
    private static func reason(_ error: LlmError) -> String {
        if case .invalidSavedChat(let reason) = error { return reason }
        if case .storage(let reason) = error { return reason }
        return describe(error)
    }
}

/// Everything a chat UI draws, as one value.
public struct ChatSnapshot: Sendable, Equatable {
    public var state: ChatState
    /// The conversation so far: the session's history (the system message, if
    /// any, then user and assistant turns). The answer being generated is in
    /// `state`, not here.
    public var transcript: [ChatMessage]
    /// The last finished (or stopped) turn's numbers: tokens/s, time to first token.
    public var lastStats: GenerationResult?
    /// The loaded model, nil if none.
    public var model: ModelInfo?
    /// The loaded model's file.
    public var modelPath: String?
    /// Why the last save to, or restore from, ``ChatController/chatFile``
    /// failed (`.chatNotSaved` or `.chatNotRestored`); nil once a save
    /// succeeds. Not a `state`: the chat itself works on.
    public var chatFileError: ChatError?

    public init(state: ChatState = .noModel, transcript: [ChatMessage] = [], lastStats: GenerationResult? = nil,
                model: ModelInfo? = nil, modelPath: String? = nil, chatFileError: ChatError? = nil) {
        self.state = state
        self.transcript = transcript
        self.lastStats = lastStats
        self.model = model
        self.modelPath = modelPath
        self.chatFileError = chatFileError
    }

    /// Whether ``ChatController/send(_:)`` would start a turn now.
    public var canSend: Bool {
        guard model != nil else { return false }
        switch state {
        case .ready, .error: return true
        default: return false
        }
    }

    /// Whether ``ChatController/stop()`` has something to stop.
    public var canStop: Bool {
        switch state {
        case .generating, .downloading, .importing: return true
        default: return false
        }
    }
}
