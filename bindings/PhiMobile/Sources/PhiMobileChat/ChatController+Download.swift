import Foundation
import PhiMobile

// Downloading a model, on PhiMobile's downloadModel (Rust `download_model`).
extension ChatController {
    /// Downloads a model from the Hugging Face Hub (or a mirror) into
    /// `directory` and loads it. States: `downloading(done, total)`, then as
    /// ``load(modelAt:tokenizerPath:)``. A model downloaded before loads
    /// without network; an interrupted download resumes. `stop()` cancels the
    /// download (the partial file stays for the next try); the state then
    /// returns to what it was (`ready` with the old model, or `noModel`). A
    /// loaded model stays loaded until the new file is complete.
    public func download(_ request: DownloadRequest, into directory: URL) async {
        await quiesce()
        // Stopping cancels the operation's task, which cancels the download.
        await run(stop: nil) { controller in
            await controller.performDownload(request, into: directory)
        }
    }

    func performDownload(_ request: DownloadRequest, into directory: URL) async {
        let resting = restingState
        publish(.downloading(done: 0, total: 0))
        let (progress, report) = AsyncStream.makeStream(of: (Int64, Int64).self, bufferingPolicy: .bufferingNewest(1))
        // Not a child of this task: cancelling it (stop()) must cancel only the
        // download, and the progress loop below must keep running until it ends.
        let downloading = Task {
            defer { report.finish() }
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            return try await downloadModel(request, to: directory.path) { done, total in report.yield((done, total)) }
        }
        await withTaskCancellationHandler {
            for await (done, total) in progress {
                publish(.downloading(done: done, total: total))
            }
        } onCancel: {
            downloading.cancel()
        }
        do {
            let model = try await downloading.value
            await performLoad(path: model.path, tokenizerPath: nil)
        } catch is CancellationError {
            publish(resting)
        } catch LlmError.cancelled {
            publish(resting)
        } catch {
            publish(.error(Self.chatError(error)))
        }
    }
}
