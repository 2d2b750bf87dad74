// tfjs LayersModel (or its bottom up to a cut layer) → ONNX ModelProto bytes, with the same
// inputs and outputs as the tfjs model: NHWC images in, the cut layer's output (NHWC when it
// is an image) out. Weights are read from the model's variables at conversion time.
import type { tf } from '../backend.ts';
import { layerGraph, type LayerGraph } from '../training/surgery.ts';
import { NotConvertible, OnnxGraph } from './graph.ts';
import { LAYER_MAPPINGS, type Value } from './layers.ts';

export type OnnxConversion =
  | {
      convertible: true;
      /** ModelProto bytes for InferenceSession.create. */
      bytes: Uint8Array;
      inputName: string;
      outputName: string;
      /** Keras shapes without the batch dimension. */
      inputShape: number[];
      outputShape: number[];
      /** Layers converted (the input layer not counted). */
      layers: number;
    }
  | {
      convertible: false;
      reason: string;
      /** The first layer that could not be expressed, when one layer is to blame. */
      layer?: { name: string; className: string };
    };

const INPUT = 'images';
const OUTPUT = 'output';

/**
 * Converts `model`, or with `cut` only the layers that the cut layer's output depends on
 * (the frozen bottom, as surgery.ts rebuilds it). Never throws for a model it cannot express:
 * an unknown layer class, a configuration a mapping does not cover, several inputs or outputs,
 * shared layers — all come back as `{ convertible: false, reason }`.
 */
export function convertToOnnx(model: tf.LayersModel, opts: { cut?: string } = {}): OnnxConversion {
  let graph: LayerGraph;
  try {
    graph = layerGraph(model);
  } catch (error) {
    return { convertible: false, reason: (error as Error).message };
  }
  const target = opts.cut ?? graph.outputName;
  if (target !== graph.inputName && !graph.producers.has(target)) return { convertible: false, reason: `no layer named ${target} in model ${model.name}` };
  const layers = needed(graph, target);

  // Every class is checked before any weight is read, so the common refusal is cheap.
  for (const name of layers) {
    const className = model.getLayer(name).getClassName();
    if (!LAYER_MAPPINGS[className]) return { convertible: false, reason: `layer ${name} is a ${className}, which the ONNX converter does not know`, layer: { name, className } };
  }
  if (model.inputs[0]!.dtype !== 'float32') return { convertible: false, reason: `input dtype ${model.inputs[0]!.dtype}` };

  const g = new OnnxGraph();
  const values = new Map<string, Value>();
  const input = g.fresh(INPUT);
  const inputShape = graph.inputShape;
  // Images enter NHWC like tfjs' and are kept NCHW inside (see layers.ts).
  values.set(graph.inputName, { name: inputShape.length === 3 ? g.node('Transpose', [input], { perm: [0, 3, 1, 2] }, 'input_nchw') : input, shape: inputShape });
  for (const name of layers) {
    const layer = model.getLayer(name);
    const className = layer.getClassName();
    try {
      const outputShape = shapeOf(layer);
      const output = LAYER_MAPPINGS[className]!({
        g,
        layer,
        config: layer.getConfig() as Record<string, unknown>,
        inputs: graph.producers.get(name)!.map((p) => values.get(p)!),
        outputShape,
        // getWeights returns the variables themselves: read, never disposed.
        weights: layer.getWeights().map((w) => ({ data: w.dataSync() as Float32Array, shape: w.shape })),
      });
      values.set(name, { name: output, shape: outputShape });
    } catch (error) {
      if (!(error instanceof NotConvertible)) throw error;
      return { convertible: false, reason: `layer ${name} (${className}): ${error.message} is not supported`, layer: { name, className } };
    }
  }

  const out = values.get(target)!;
  // Back to NHWC when the output is an image; the Identity gives the output a name of its own
  // even when the last layers added no node (Dropout) or the graph is the input itself.
  const last = out.shape.length === 3 ? g.node('Transpose', [out.name], { perm: [0, 2, 3, 1] }, 'output_nhwc') : out.name;
  const output = g.node('Identity', [last], {}, OUTPUT);
  const bytes = g.encode({ input, inputShape, output, outputShape: out.shape, name: `${model.name}${opts.cut ? `_to_${opts.cut}` : ''}` });
  return { convertible: true, bytes, inputName: input, outputName: output, inputShape, outputShape: out.shape, layers: layers.length };
}

/** The layers `target`'s output depends on, in topological order. */
function needed(graph: LayerGraph, target: string): string[] {
  const keep = new Set<string>();
  const stack = [target];
  while (stack.length > 0) {
    const name = stack.pop()!;
    if (name === graph.inputName || keep.has(name)) continue;
    keep.add(name);
    stack.push(...graph.producers.get(name)!);
  }
  return graph.order.filter((n) => keep.has(n));
}

function shapeOf(layer: tf.layers.Layer): number[] {
  const shape = layer.outputShape as (number | null)[];
  if (!Array.isArray(shape) || Array.isArray(shape[0])) throw new NotConvertible('a layer with several outputs');
  return shape.slice(1).map((d) => {
    if (d == null) throw new NotConvertible('an unknown output dimension');
    return d;
  });
}
