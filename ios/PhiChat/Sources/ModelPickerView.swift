import PhiMobileChat
import SwiftUI
import UniformTypeIdentifiers

/// Pick a .gguf from Files (copied into the app's storage) or download one.
struct ModelPickerView: View {
    @ObservedObject var chat: ChatViewModel
    @Environment(\.dismiss) private var dismiss
    @State private var picking = false

    /// Declared in Info.plist (UTImportedTypeDeclarations).
    private static let gguf = UTType(importedAs: "dev.phimobile.gguf", conformingTo: .data)

    private var snapshot: ChatSnapshot { chat.snapshot }

    var body: some View {
        NavigationStack {
            List {
                Section("Loaded") {
                    if let model = snapshot.model {
                        LabeledContent(model.name ?? model.architecture, value: Memory.format(model.fileSizeBytes))
                        LabeledContent("Context", value: "\(model.contextLength) tokens")
                        LabeledContent("Threads", value: "\(model.threads)")
                        Button("Close the model", role: .destructive) { chat.closeModel() }
                            .disabled(snapshot.canStop)
                    } else {
                        Text("No model").foregroundStyle(.secondary)
                    }
                }
                Section {
                    Button("Choose a .gguf file…") { picking = true }
                        .disabled(busy)
                } header: {
                    Text("From Files")
                } footer: {
                    Text("The file is copied into the app, so it stays available.")
                }
                Section("Download") {
                    ForEach(DownloadableModel.all) { model in
                        Button { chat.download(model) } label: {
                            LabeledContent(model.title, value: Memory.format(model.approximateBytes))
                        }
                        .disabled(busy)
                    }
                }
                progress
                Section {
                    LabeledContent("Available to this app", value: available)
                } footer: {
                    Text("iOS ends apps that pass their memory limit. Large models need a device with 6 GB of RAM or more.")
                }
            }
            .navigationTitle("Models")
            .navigationBarTitleDisplayMode(.inline)
            .toolbar {
                ToolbarItem(placement: .confirmationAction) { Button("Done") { dismiss() } }
            }
            .fileImporter(isPresented: $picking, allowedContentTypes: [Self.gguf]) { result in
                if case .success(let url) = result { chat.importModel(from: url) }
            }
            .onChange(of: snapshot.state) { state in
                if state == .ready { dismiss() }
            }
        }
    }

    private var busy: Bool {
        switch snapshot.state {
        case .importing, .downloading, .loading, .generating: return true
        default: return false
        }
    }

    private var available: String {
        let bytes = Memory.availableBytes
        return bytes == 0 ? "unknown" : Memory.format(bytes)
    }

    @ViewBuilder
    private var progress: some View {
        switch snapshot.state {
        case .importing(let name):
            Section { ProgressView("Copying \(name)…") }
        case .downloading(let done, let total):
            Section {
                if total > 0 {
                    ProgressView(value: Double(done), total: Double(total)) {
                        Text("Downloading \(Memory.format(done)) of \(Memory.format(total))")
                    }
                } else {
                    ProgressView("Connecting…")
                }
                Button("Stop", role: .cancel) { chat.stop() }
            }
        case .loading(let fraction):
            Section { ProgressView("Loading…", value: fraction) }
        case .error(let error):
            Section { Text(error.message).foregroundStyle(.red) }
        default:
            if let notice = chat.notice {
                Section { Text(notice).foregroundStyle(.orange) }
            }
        }
    }
}
