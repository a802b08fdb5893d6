import PhiMobileChat
import SwiftUI

struct ChatView: View {
    @ObservedObject var chat: ChatViewModel
    @State private var showingModels = false

    private var snapshot: ChatSnapshot { chat.snapshot }

    var body: some View {
        NavigationStack {
            VStack(spacing: 0) {
                transcript
                Divider()
                status
                input
            }
            .navigationTitle(snapshot.model?.name ?? "Phi Chat")
            .navigationBarTitleDisplayMode(.inline)
            .toolbar {
                ToolbarItem(placement: .navigationBarLeading) {
                    Button("Models") { showingModels = true }
                }
                ToolbarItem(placement: .navigationBarTrailing) {
                    Button { chat.newChat() } label: { Image(systemName: "square.and.pencil") }
                        .disabled(!snapshot.canSend)
                        .accessibilityLabel("New chat")
                }
            }
            .sheet(isPresented: $showingModels) { ModelPickerView(chat: chat) }
            .onAppear { if snapshot.model == nil { showingModels = true } }
        }
    }

    // MARK: - Transcript and the answer being generated

    private var messages: [ChatMessage] { snapshot.transcript.filter { $0.role != .system } }

    private var streaming: String? {
        if case .generating(let partial) = snapshot.state { return partial }
        return nil
    }

    private var transcript: some View {
        ScrollViewReader { proxy in
            ScrollView {
                LazyVStack(alignment: .leading, spacing: 12) {
                    ForEach(Array(messages.enumerated()), id: \.offset) { _, message in
                        Bubble(text: message.content, fromUser: message.role == .user)
                    }
                    if let streaming {
                        Bubble(text: streaming.isEmpty ? "…" : streaming, fromUser: false)
                    }
                    Color.clear.frame(height: 1).id("end")
                }
                .padding()
            }
            .scrollDismissesKeyboard(.interactively)
            .onChange(of: streaming) { _ in proxy.scrollTo("end", anchor: .bottom) }
            .onChange(of: messages.count) { _ in proxy.scrollTo("end", anchor: .bottom) }
        }
    }

    // MARK: - Numbers, progress and errors

    @ViewBuilder
    private var status: some View {
        Group {
            switch snapshot.state {
            case .error(let error):
                Text(error.message).foregroundStyle(.red)
            case .loading(let progress):
                ProgressView("Loading the model", value: progress)
            case .importing(let name):
                ProgressView("Copying \(name)")
            case .downloading(let done, let total):
                ProgressView("Downloading", value: Double(done), total: Double(max(total, 1)))
            case .generating:
                Text("Generating…").foregroundStyle(.secondary)
            case .ready, .noModel:
                // A chat that could not be saved or restored: the chat itself works.
                if let problem = snapshot.chatFileError {
                    Text(problem.message).foregroundStyle(.orange)
                } else if let stats = snapshot.lastStats {
                    Text(summary(stats)).foregroundStyle(.secondary)
                }
            }
        }
        .font(.footnote)
        .padding(.horizontal)
        .padding(.top, 6)
    }

    private func summary(_ stats: GenerationResult) -> String {
        let ttft = String(format: "%.0f ms to first token", stats.timeToFirstTokenMs)
        let speed = String(format: "%.1f tokens/s", stats.decodeTokensPerSecond)
        let stopped = stats.stopReason == .cancelled ? " · stopped" : ""
        return "\(ttft) · \(speed) · \(stats.generatedTokens) tokens\(stopped)"
    }

    // MARK: - Input, Send and Stop

    private var input: some View {
        HStack(alignment: .bottom, spacing: 8) {
            TextField("Message", text: $chat.draft, axis: .vertical)
                .lineLimit(1...5)
                .textFieldStyle(.roundedBorder)
                .onSubmit { chat.send() }
            if streaming != nil {
                Button { chat.stop() } label: { Image(systemName: "stop.circle.fill").font(.title) }
                    .accessibilityLabel("Stop")
            } else {
                Button { chat.send() } label: { Image(systemName: "arrow.up.circle.fill").font(.title) }
                    .disabled(!snapshot.canSend || chat.draft.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
                    .accessibilityLabel("Send")
            }
        }
        .padding()
    }
}

private struct Bubble: View {
    let text: String
    let fromUser: Bool

    var body: some View {
        HStack {
            if fromUser { Spacer(minLength: 40) }
            Text(text)
                .textSelection(.enabled)
                .padding(10)
                .background(fromUser ? Color.accentColor.opacity(0.2) : Color.secondary.opacity(0.15))
                .clipShape(RoundedRectangle(cornerRadius: 12))
            if !fromUser { Spacer(minLength: 40) }
        }
    }
}
