// Embedding throughput through the inference runner, ONNX Runtime against tfjs, in one process
// on the same images: warm-up, then `reps` timed passes per engine, interleaved so that both
// see the same machine state. Prints median / min / max images per second.
//   node --conditions=development --import tsx bench/embedding-engines.ts [mobilenet_v2|inception_v3|small_cnn] [batch] [n] [reps] [backend]
import { forwardImages, initBackend, loadBaseModel, type EngineChoice } from '../packages/ml/src/index.ts';

const [id = 'mobilenet_v2', batch = '16', count = '64', repsArg = '5', backend = 'wasm'] = process.argv.slice(2);
console.log('tfjs backend', await initBackend(backend as 'wasm'), '| ML_THREADS', process.env.ML_THREADS ?? '(all cores)');
const base = await loadBaseModel(id);
const s = base.info.inputSize;
const images = Array.from({ length: Number(count) }, (_, i) => new Float32Array(s * s * 3).map((_, k) => ((k * 7 + i * 13) % 256) / 255));
const batchSize = Number(batch);
const reps = Number(repsArg);

const rates: Record<EngineChoice, number[]> = { auto: [], tfjs: [] };
for (const engine of ['auto', 'tfjs'] as const) {
  const t = performance.now();
  const r = await forwardImages(base.model, images.slice(0, batchSize), { batchSize, engine }); // warm-up (ORT: conversion + session)
  console.log(`${r.engine}: first batch ${(performance.now() - t).toFixed(0)} ms${r.fallback ? ` (fallback: ${r.fallback})` : ''}`);
}
for (let rep = 0; rep < reps; rep++) {
  for (const engine of ['auto', 'tfjs'] as const) {
    const t = performance.now();
    await forwardImages(base.model, images, { batchSize, engine });
    rates[engine].push((images.length / (performance.now() - t)) * 1000);
  }
}
const fmt = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
  return `median ${median.toFixed(1)}, min ${sorted[0]!.toFixed(1)}, max ${sorted[sorted.length - 1]!.toFixed(1)} images/s`;
};
console.log(`${id} ${s}×${s}, ${count} images at batch ${batch}, ${reps} passes each:`);
console.log(`  onnxruntime  ${fmt(rates.auto)}`);
console.log(`  tfjs-${backend}   ${fmt(rates.tfjs)}`);
console.log(`  rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
