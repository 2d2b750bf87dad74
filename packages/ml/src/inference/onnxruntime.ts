// ONNX Runtime sessions for converted tfjs models. The package is imported on first use and its
// absence (or a native binding that will not load on this platform) only means tfjs runs.
import type { InferenceSession } from 'onnxruntime-node';
import type { tf } from '../backend.ts';
import { convertToOnnx } from '../onnx/convert.ts';
import { mlThreads } from '../threads.ts';
import { loadOrt, runInPieces, sessionOptions } from './ort.ts';

export interface OrtSession {
  session: InferenceSession;
  inputName: string;
  outputName: string;
  /** Keras shapes without the batch dimension. */
  inputShape: number[];
  outputShape: number[];
}

/** Converts `model` (up to `cut`) and opens a session on it, or says why it cannot. */
export async function openSession(model: tf.LayersModel, cut: string | undefined): Promise<OrtSession | { reason: string }> {
  const conversion = convertToOnnx(model, cut === undefined ? {} : { cut });
  if (!conversion.convertible) return { reason: conversion.reason };
  const loaded = await loadOrt();
  if (loaded instanceof Error) return { reason: loaded.message };
  // A bad ML_THREADS is a configuration error: it throws here rather than passing for a model ORT refused.
  const threads = mlThreads();
  try {
    const session = await loaded.InferenceSession.create(conversion.bytes, sessionOptions(threads));
    return { session, inputName: conversion.inputName, outputName: conversion.outputName, inputShape: conversion.inputShape, outputShape: conversion.outputShape };
  } catch (error) {
    return { reason: `onnxruntime refused the converted model: ${(error as Error).message.split('\n')[0]}` };
  }
}

/** One batch through a session: NHWC float32 in, the output's values out. */
export async function runSession(s: OrtSession, batch: Float32Array, count: number): Promise<Float32Array> {
  const loaded = await loadOrt();
  if (loaded instanceof Error) throw loaded;
  return runInPieces(loaded, s.session, { input: s.inputName, output: s.outputName }, batch, [count, ...s.inputShape]);
}
