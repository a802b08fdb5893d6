import Foundation
import Testing
@testable import PhiMobileChat
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The controller's download path up to the network. (The transfer itself —
/// resume, integrity checks — is tested in Rust against a local Hub stand-in.)
@Suite("Downloading a model", .serialized)
struct ChatDownloadTests {
    @Test("an unreachable server is error(.llm(.network)); the loaded model stays")
    func unreachable() async throws {
        let chat = try await ChatFixtures.loaded(greedy)
        let recorder = await Recorder(chat)
        let request = DownloadRequest(repoId: "org/model", filename: "model.gguf", endpoint: "http://127.0.0.1:9")
        await chat.download(request, into: try ChatFixtures.directory("unreachable"))
        // The recorder sees updates a little after they are published: wait for the last one
        // (a refused connection now fails within milliseconds).
        _ = try await recorder.wait { snapshot in
            if case .error = snapshot.state { return true }
            return false
        }

        let states = distinct(recorder.states)
        #expect(states.prefix(2) == [.ready, .downloading(done: 0, total: 0)], "\(states)")
        guard case .error(.llm(.network(let reason)))? = states.last else {
            Issue.record("expected a Network error, got \(states)")
            return
        }
        #expect(reason.contains("127.0.0.1:9"))
        #expect(await chat.snapshot.canSend, "the model loaded before is still there")
        #expect(await chat.send("Hi") != nil)
    }

    @Test("stop() cancels a stalled download at once and returns to the state before it")
    func stopStalled() async throws {
        let server = try StalledServer()
        let chat = try await ChatFixtures.loaded(greedy)
        let recorder = await Recorder(chat)
        let request = DownloadRequest(repoId: "org/model", filename: "model.gguf", endpoint: "http://127.0.0.1:\(server.port)")
        let directory = try ChatFixtures.directory("stalled")
        let download = Task { await chat.download(request, into: directory) }
        try await recorder.wait { $0.state == .downloading(done: 0, total: 0) }
        // Let the request reach the server, which never answers.
        try await Task.sleep(nanoseconds: 200_000_000)
        #expect(await chat.snapshot.state == .downloading(done: 0, total: 0))

        let stoppedAt = Date()
        await chat.stop()
        await download.value
        let stopTime = Date().timeIntervalSince(stoppedAt)
        #expect(stopTime < 2, "stop took \(stopTime) s")
        #expect(distinct(recorder.states) == [.ready, .downloading(done: 0, total: 0), .ready])
        #expect(await chat.snapshot.canSend)
    }

    @Test("with no model, a stopped download goes back to noModel")
    func stopWithoutModel() async throws {
        let server = try StalledServer()
        let chat = ChatController()
        let recorder = await Recorder(chat)
        let request = DownloadRequest(repoId: "org/model", filename: "model.gguf", endpoint: "http://127.0.0.1:\(server.port)")
        let download = Task { await chat.download(request, into: try ChatFixtures.directory("stalled-empty")) }
        try await recorder.wait { $0.state == .downloading(done: 0, total: 0) }
        download.cancel() // the caller's cancellation stops it like stop()
        try await download.value
        #expect(distinct(recorder.states) == [.noModel, .downloading(done: 0, total: 0), .noModel])
    }
}

/// A TCP port on 127.0.0.1 that takes connections (the kernel completes the
/// handshake for the listen backlog) and never answers: a stalled server.
final class StalledServer {
    let port: UInt16
    private let socketFD: Int32

    struct Failed: Error { let call: String }

    init() throws {
        #if canImport(Glibc)
        socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        socketFD = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard socketFD >= 0 else { throw Failed(call: "socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0 // any free port
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = socketFD
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw Failed(call: "bind/listen")
        }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else {
            close(fd)
            throw Failed(call: "getsockname")
        }
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit { close(socketFD) }
}
