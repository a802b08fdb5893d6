import SwiftUI

@main
struct PhiChatApp: App {
    @StateObject private var chat = ChatViewModel()
    @Environment(\.scenePhase) private var scenePhase

    var body: some Scene {
        WindowGroup {
            ChatView(chat: chat)
        }
        .onChange(of: scenePhase) { phase in
            // A backgrounded app gets little CPU and a much lower memory
            // limit: stop generating rather than be killed mid-answer.
            if phase == .background { chat.stop() }
        }
    }
}
