// An ONNX graph under construction: nodes, initializers (weights and constants) and unique
// tensor names, encoded with the protobufjs code `onnx-proto` generates from ONNX's onnx.proto.
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** Opset 17 is the first with LayerNormalization; ONNX Runtime 1.16+ runs it. IR version 8 goes with it. */
export const OPSET = 17;
const IR_VERSION = 8;

export type AttributeValue = number | number[] | string;

/** A layer the converter cannot express in ONNX; caught by convertToOnnx and reported, never thrown to callers. */
export class NotConvertible extends Error {
  constructor(
    message: string,
    readonly layer?: { name: string; className: string },
  ) {
    super(message);
  }
}

export class OnnxGraph {
  private readonly nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  private readonly initializers: InstanceType<typeof onnx.TensorProto>[] = [];
  private readonly names = new Set<string>();

  /** A tensor name not used yet, derived from `hint`. */
  fresh(hint: string): string {
    let name = hint;
    for (let i = 1; this.names.has(name); i++) name = `${hint}_${i}`;
    this.names.add(name);
    return name;
  }

  /** A float32 initializer (weights are stored as raw little-endian bytes). */
  floats(hint: string, data: Float32Array, dims: number[]): string {
    if (data.length !== dims.reduce((a, b) => a * b, 1)) throw new Error(`initializer ${hint}: ${data.length} values for dims [${dims}]`);
    const name = this.fresh(hint);
    this.initializers.push(
      onnx.TensorProto.create({ name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }),
    );
    return name;
  }

  /** An int64 initializer, for shape-like inputs (Pad's pads, Reshape's shape). */
  int64s(hint: string, values: number[]): string {
    const name = this.fresh(hint);
    this.initializers.push(onnx.TensorProto.create({ name, dims: [values.length], dataType: onnx.TensorProto.DataType.INT64, int64Data: values }));
    return name;
  }

  /** Appends one node; returns its (single) output's name. An empty input name is an omitted optional input. */
  node(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, hint = opType.toLowerCase()): string {
    const output = this.fresh(hint);
    this.nodes.push(
      onnx.NodeProto.create({
        opType,
        name: output,
        input: inputs,
        output: [output],
        attribute: Object.entries(attributes).map(([name, value]) => attribute(name, value)),
      }),
    );
    return output;
  }

  /**
   * The ModelProto bytes: one float32 input and one float32 output, batch dimension symbolic
   * ('N'), other dimensions as given.
   */
  encode(p: { input: string; inputShape: number[]; output: string; outputShape: number[]; name: string }): Uint8Array {
    const valueInfo = (name: string, shape: number[]) =>
      onnx.ValueInfoProto.create({
        name,
        type: {
          tensorType: {
            elemType: onnx.TensorProto.DataType.FLOAT,
            shape: { dim: [{ dimParam: 'N' }, ...shape.map((d) => ({ dimValue: d }))] },
          },
        },
      });
    const model = onnx.ModelProto.create({
      irVersion: IR_VERSION,
      opsetImport: [{ domain: '', version: OPSET }],
      producerName: 'finetune',
      graph: onnx.GraphProto.create({
        name: p.name,
        node: this.nodes,
        initializer: this.initializers,
        input: [valueInfo(p.input, p.inputShape)],
        output: [valueInfo(p.output, p.outputShape)],
      }),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function attribute(name: string, value: AttributeValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') return onnx.AttributeProto.create({ name, type: T.STRING, s: new TextEncoder().encode(value) });
  if (Array.isArray(value)) return onnx.AttributeProto.create({ name, type: T.INTS, ints: value });
  // Integer-valued attributes (axis, group, count_include_pad) are INT; epsilon and alpha are FLOAT.
  return Number.isInteger(value) && !FLOAT_ATTRIBUTES.has(name)
    ? onnx.AttributeProto.create({ name, type: T.INT, i: value })
    : onnx.AttributeProto.create({ name, type: T.FLOAT, f: value });
}

/** Float attributes whose value may happen to be a whole number (alpha = 1, beta = 0). */
const FLOAT_ATTRIBUTES = new Set(['epsilon', 'alpha', 'beta', 'gamma', 'min', 'max', 'momentum']);
