// Classify raw audio with model.e2e.onnx in Node.js: npm install onnxruntime-node
// usage: node e2e.js MODEL_DIR AUDIO.f32   (float32 little-endian mono samples at the model's
// rate, a whole number of windows; pad a short cycle cyclically first, see export/README.md)
const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");

async function main() {
  const [modelDir, audioPath] = process.argv.slice(2);
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, "manifest.json"), "utf8"));
  const samples = manifest.e2e.input.shape[1]; // window_s * sample_rate
  const buf = fs.readFileSync(audioPath);
  const audio = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const batch = audio.length / samples;
  if (!Number.isInteger(batch)) throw new Error(`${audioPath}: expected a multiple of ${samples} samples`);
  const session = await ort.InferenceSession.create(path.join(modelDir, manifest.e2e.file));
  const out = await session.run({ audio: new ort.Tensor("float32", audio, [batch, samples]) });
  const labels = manifest.labels, p = out.probabilities.data;
  for (let b = 0; b < batch; b++) {
    const row = Array.from(p.slice(b * labels.length, (b + 1) * labels.length));
    const best = row.indexOf(Math.max(...row));
    console.log(JSON.stringify({ window: b, label: labels[best], probabilities: row }));
  }
}
main().catch((err) => { console.error(err.message); process.exit(1); });
