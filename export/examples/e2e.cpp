// Classify one window of raw audio with model.e2e.onnx through the onnxruntime C++ API.
// Not compiled by this project; build against an onnxruntime release, e.g.
//   g++ -std=c++17 e2e.cpp -I$ORT/include -L$ORT/lib -lonnxruntime -o e2e
// usage: ./e2e MODEL_DIR/model.e2e.onnx AUDIO.f32 SAMPLES   (SAMPLES = manifest e2e.input.shape[1])
#include <onnxruntime_cxx_api.h>
#include <array>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) { std::cerr << "usage: e2e MODEL AUDIO.f32 SAMPLES\n"; return 2; }
  const int64_t samples = std::stoll(argv[3]);
  std::ifstream in(argv[2], std::ios::binary);  // float32 little-endian, mono, the model's rate
  std::vector<float> audio(samples);             // one window, already cyclic-padded
  if (!in.read(reinterpret_cast<char*>(audio.data()), samples * sizeof(float))) { std::cerr << "short file\n"; return 1; }
  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "edge-lung");
  Ort::SessionOptions opts;
  opts.SetIntraOpNumThreads(1);
  Ort::Session session(env, argv[1], opts);
  const std::array<int64_t, 2> shape{1, samples};
  auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  Ort::Value input = Ort::Value::CreateTensor<float>(mem, audio.data(), audio.size(), shape.data(), shape.size());
  const char* in_names[] = {"audio"};
  const char* out_names[] = {"probabilities"};
  auto out = session.Run(Ort::RunOptions{nullptr}, in_names, &input, 1, out_names, 1);
  const float* p = out[0].GetTensorData<float>();
  const size_t classes = out[0].GetTensorTypeAndShapeInfo().GetShape()[1];  // labels: manifest.json "labels"
  for (size_t c = 0; c < classes; ++c) std::cout << (c ? " " : "") << p[c];
  std::cout << "\n";
  return 0;
}
