// Evaluation without the base's forward pass: when a classifier's base stayed frozen, its
// validation probabilities follow from the base's embeddings (which the embedding cache holds)
// through the head alone.
import type { tf } from './backend.ts';
import { forwardImages } from './inference/runner.ts';
import { cutTensorAt, HEAD_PREFIX, layerGraph, rebuild } from './training/surgery.ts';

/**
 * Class probabilities (N × C, row-major) of a trained classifier (base + `head_*` layers, as
 * trainClassifier composes it) from its base's embeddings instead of images: only the head
 * runs. For a classifier whose base stayed frozen this is what running the whole model over the
 * images gives, up to float rounding. `embeddingLayer` is the layer the embeddings were taken
 * at; it must be the one that feeds the head.
 */
export async function probabilitiesFromEmbeddings(model: tf.LayersModel, embeddings: Float32Array, embeddingLayer: string, batchSize = 256): Promise<Float32Array> {
  const graph = layerGraph(model);
  const firstHead = graph.order.findIndex((n) => n.startsWith(HEAD_PREFIX));
  if (firstHead < 0) throw new Error(`model ${model.name} has no ${HEAD_PREFIX}* layers`);
  const feeds = cutTensorAt(graph, firstHead);
  if (feeds !== embeddingLayer) throw new Error(`the head of ${model.name} takes ${feeds ?? 'several tensors'}, not ${embeddingLayer}`);
  const head = rebuild(graph, { from: embeddingLayer, to: graph.outputName, layers: graph.order.slice(firstHead), name: 'head_only' });
  try {
    const dim = head.inputs[0]!.shape[1]!;
    if (embeddings.length % dim !== 0) throw new Error(`embeddings have ${embeddings.length} values, not a multiple of the head's input width ${dim}`);
    const rows = Array.from({ length: embeddings.length / dim }, (_, i) => embeddings.subarray(i * dim, (i + 1) * dim));
    // The shared runner, on tfjs: a head is a few dense layers, not worth an ONNX conversion per model.
    return (await forwardImages(head, rows, { batchSize, engine: 'tfjs' })).output;
  } finally {
    head.dispose();
  }
}
