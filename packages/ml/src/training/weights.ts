// Weight snapshots: per-layer copies of weights keyed by layer name, the best epoch's copy, and
// the conversions between snapshots, models and plain arrays (for the training-state blob).
import { tf } from '../backend.ts';
import { applyCopies, layerGraph, type LayerGraph } from './surgery.ts';
import type { TensorData } from './training-state.ts';

/** Layer name → that layer's weights (in layer.getWeights() order). Owns its tensors. */
export type WeightMap = Map<string, tf.Tensor[]>;

export function disposeMap(m: WeightMap | null | undefined): void {
  m?.forEach((ws) => ws.forEach((w) => w.dispose()));
  m?.clear();
}

export function cloneMap(m: WeightMap): WeightMap {
  return new Map([...m].map(([k, ws]) => [k, ws.map((w) => w.clone())]));
}

/** Copies a model's per-layer weights into `into` (layers with weights only), replacing entries. */
export function snapshotLayers(model: tf.LayersModel, into: WeightMap): void {
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    into.get(layer.name)?.forEach((w) => w.dispose());
    into.set(layer.name, layer.getWeights().map((w) => w.clone()));
  }
}

/** Appends copies of the head's layers (weights from `weights`, else the head's) after `x`. */
export function applyHeadCopies(head: tf.LayersModel, x: tf.SymbolicTensor, weights?: WeightMap): tf.SymbolicTensor {
  const g = layerGraph(head);
  return applyCopies(g, x, { from: g.inputName, to: g.outputName, layers: g.order, weights: (n) => weights?.get(n) });
}

/** The deployable model: base layers (weights from `weights`, else the base's) + head. */
export function composeClassifier(graph: LayerGraph, head: tf.LayersModel, weights: WeightMap): tf.LayersModel {
  const input = tf.input({ shape: graph.inputShape, name: graph.inputName });
  const embedding = applyCopies(graph, input, { from: graph.inputName, to: graph.outputName, layers: graph.order, weights: (n) => weights.get(n) });
  return tf.model({ inputs: input, outputs: applyHeadCopies(head, embedding, weights), name: 'classifier' });
}

/** The best epoch so far and its weights: higher accuracy wins, a tie goes to the lower loss. */
export class BestWeights {
  private best: { epoch: number; acc: number; loss: number; weights: WeightMap } | null = null;

  improves(acc: number, loss: number): boolean {
    return this.best === null || acc > this.best.acc || (acc === this.best.acc && loss < this.best.loss);
  }

  /** Takes ownership of `weights`. */
  set(epoch: number, acc: number, loss: number, weights: WeightMap): void {
    disposeMap(this.best?.weights);
    this.best = { epoch, acc, loss, weights };
  }

  get score(): { epoch: number; acc: number; loss: number } | null {
    return this.best && { epoch: this.best.epoch, acc: this.best.acc, loss: this.best.loss };
  }

  get weights(): WeightMap | null {
    return this.best?.weights ?? null;
  }

  dispose(): void {
    disposeMap(this.best?.weights);
    this.best = null;
  }
}

/** The values of a snapshot, for serialisation. */
export async function weightData(m: WeightMap | Map<string, tf.Tensor[]>): Promise<Map<string, TensorData[]>> {
  const out = new Map<string, TensorData[]>();
  for (const [name, ws] of m) out.set(name, await Promise.all(ws.map(tensorData)));
  return out;
}

export async function tensorData(t: tf.Tensor): Promise<TensorData> {
  if (t.dtype !== 'float32' && t.dtype !== 'int32') throw new Error(`cannot save a ${t.dtype} tensor in a training state`);
  const data = await t.data();
  return { dtype: t.dtype, shape: [...t.shape], data: t.dtype === 'float32' ? Float32Array.from(data as Float32Array) : Int32Array.from(data as Int32Array) };
}

export function tensorFrom(d: TensorData): tf.Tensor {
  return tf.tensor(d.data, d.shape, d.dtype);
}

/** Tensors (owned by the returned map) from saved values. */
export function weightMapFrom(m: Map<string, TensorData[]>): WeightMap {
  return new Map([...m].map(([name, ws]) => [name, ws.map(tensorFrom)]));
}

/**
 * Throws unless every entry of `m` names a layer of one of `models` and matches its weights in
 * count and shape: checked before anything is restored, so a mismatch never half-loads.
 */
export function checkWeightShapes(what: string, m: Map<string, TensorData[]>, models: tf.LayersModel[]): void {
  for (const [name, ws] of m) {
    const layer = models.map((model) => model.layers.find((l) => l.name === name)).find(Boolean);
    if (!layer) throw new Error(`training state: ${what} weights for layer '${name}', which this model does not have`);
    const expected = layer.weights.map((w) => w.shape.join('x'));
    const got = ws.map((w) => w.shape.join('x'));
    if (expected.join() !== got.join()) throw new Error(`training state: ${what} weights of layer '${name}' are [${got.join(', ')}]; the layer has [${expected.join(', ')}]`);
  }
}
