import SwiftUI

@main
struct RestV2DemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
