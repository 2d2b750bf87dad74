// Measures base-model load time and embedding throughput on the chosen backend.
//   node --conditions=development --import tsx bench/embed.ts [mobilenet_v2|inception_v3|small_cnn] [batch] [n] [backend]
import { initBackend, loadBaseModel, computeEmbeddings } from '../packages/ml/src/index.ts';

const [id = 'mobilenet_v2', batch = '16', count = '64', backend = 'wasm'] = process.argv.slice(2);
console.log('backend', await initBackend(backend as 'wasm'));
let t = performance.now();
const base = await loadBaseModel(id);
console.log(`${id}: load ${(performance.now() - t).toFixed(0)} ms`);
const s = base.info.inputSize;
const images = Array.from({ length: Number(count) }, (_, i) => new Float32Array(s * s * 3).map((_, k) => ((k * 7 + i * 13) % 256) / 255));
await computeEmbeddings(base, images.slice(0, Number(batch)), Number(batch)); // warm-up
t = performance.now();
await computeEmbeddings(base, images, Number(batch));
const ms = performance.now() - t;
console.log(`${id}: ${count} images at batch ${batch}: ${((Number(count) / ms) * 1000).toFixed(1)} images/s; rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
