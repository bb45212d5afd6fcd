import PhotosUI
import RestV2Core
import SwiftUI

/// State of the demo: the loaded classifier and the last answer.
@MainActor
final class DemoModel: ObservableObject {
    @Published var ready = false
    @Published var busy = false
    @Published var modelInfo = "Loading the model…"
    @Published var status = ""
    @Published var error: String?
    @Published var preview: UIImage?
    @Published var top5: [Prediction] = []
    @Published var latency = ""
    @Published var vision = ""
    private var classifier: Classifier?
    private let prompt = "Take or choose a photo to classify it."

    func load() async {
        guard classifier == nil else { return }
        do {
            let loaded = try await Classifier.load()
            let m = loaded.manifest
            classifier = loaded
            modelInfo = "\(m.variant.map { "ResTv2-\($0)" } ?? "ResTv2") · \(m.precision) · "
                + "\(m.imageSize)×\(m.imageSize) · \(m.numClasses) classes · Core ML "
                + "(\(m.computeUnits.rawValue)\(m.classifier != nil ? ", image classifier" : ""))"
            status = prompt
            ready = true
        } catch {
            modelInfo = "No model loaded."
            self.error = "Could not load the model: \(error.localizedDescription)"
        }
    }

    func classify(data: Data) async {
        await run { try ImageDecoding.decode(data) }
    }

    func classify(photo: UIImage) async {
        await run { try ImageDecoding.decode(photo) }
    }

    private func run(_ decode: @escaping @Sendable () throws -> RGBImage) async {
        guard let classifier else { return }
        busy = true
        error = nil
        status = "Classifying…"
        defer {
            busy = false
            status = prompt
        }
        do {
            let (image, result) = try await Task.detached(priority: .userInitiated) {
                let image = try decode()
                return (image, try classifier.classify(image))
            }.value
            preview = ImageDecoding.uiImage(image)
            top5 = result.top5
            latency = String(format: "inference %.1f ms · preprocessing %.1f ms",
                             result.inferenceMs, result.preprocessMs)
            vision = result.vision.map {
                String(format: "Vision: %@ (%.2f%%)", $0.label, $0.probability * 100)
            } ?? ""
        } catch {
            top5 = []
            latency = ""
            vision = ""
            self.error = error.localizedDescription
        }
    }
}

struct ContentView: View {
    @StateObject private var model = DemoModel()
    @State private var pickerItem: PhotosPickerItem?
    @State private var showCamera = false

    var body: some View {
        NavigationStack {
            ScrollView {
                VStack(alignment: .leading, spacing: 16) {
                    Text(model.modelInfo)
                        .font(.footnote)
                        .foregroundStyle(.secondary)
                    if let preview = model.preview {
                        Image(uiImage: preview)
                            .resizable()
                            .scaledToFit()
                            .frame(maxHeight: 280)
                            .clipShape(RoundedRectangle(cornerRadius: 12))
                    }
                    HStack {
                        Button {
                            showCamera = true
                        } label: {
                            Label("Take photo", systemImage: "camera")
                        }
                        .buttonStyle(.borderedProminent)
                        .disabled(!model.ready || model.busy || !UIImagePickerController.isSourceTypeAvailable(.camera))
                        PhotosPicker(selection: $pickerItem, matching: .images) {
                            Label("Choose photo", systemImage: "photo.on.rectangle")
                        }
                        .buttonStyle(.bordered)
                        .disabled(!model.ready || model.busy)
                    }
                    if let error = model.error {
                        Text(error).foregroundStyle(.red)
                    }
                    if !model.top5.isEmpty {
                        Text("Top 5").font(.headline)
                        ForEach(model.top5, id: \.index) { prediction in
                            VStack(alignment: .leading, spacing: 4) {
                                HStack {
                                    Text(prediction.label)
                                    Spacer()
                                    Text(String(format: "%.2f%%", prediction.probability * 100))
                                        .monospacedDigit()
                                }
                                ProgressView(value: prediction.probability)
                            }
                        }
                        if !model.vision.isEmpty {
                            Text(model.vision).font(.footnote)
                        }
                        Text(model.latency)
                            .font(.footnote)
                            .foregroundStyle(.secondary)
                    }
                    Text(model.status).foregroundStyle(.secondary)
                }
                .padding()
            }
            .navigationTitle("ResTv2")
        }
        .task { await model.load() }
        .onChange(of: pickerItem) { _, item in
            guard let item else { return }
            pickerItem = nil
            Task {
                do {
                    guard let data = try await item.loadTransferable(type: Data.self) else {
                        model.error = "The photo library returned no data for that item."
                        return
                    }
                    await model.classify(data: data)
                } catch {
                    model.error = "Could not read that photo: \(error.localizedDescription)"
                }
            }
        }
        .fullScreenCover(isPresented: $showCamera) {
            CameraPicker { photo in
                showCamera = false
                if let photo {
                    Task { await model.classify(photo: photo) }
                }
            }
            .ignoresSafeArea()
        }
    }
}
