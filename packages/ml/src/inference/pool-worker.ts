// One thread of the inference pool (pool.ts): holds ONNX Runtime sessions for the models the
// main thread has sent it and runs one batch at a time. onnxruntime-node's session.run executes
// on the calling thread, so here it blocks this thread and not the API's event loop. Loads
// ONNX Runtime only (no tfjs): a worker costs its sessions and little else.
import { parentPort, workerData } from 'node:worker_threads';
import type { InferenceSession } from 'onnxruntime-node';
import { loadOrt, runInPieces, sessionOptions } from './ort.ts';
import type { FromWorker, PoolWorkerData, ToWorker } from './pool-protocol.ts';

const port = parentPort!;
const { threads } = workerData as PoolWorkerData;
const sessions = new Map<string, Promise<InferenceSession>>();

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

function open(key: string, bytes: Uint8Array): void {
  const session = loadOrt().then(async (ort) => {
    if (ort instanceof Error) throw ort;
    try {
      return await ort.InferenceSession.create(bytes, sessionOptions(threads));
    } catch (error) {
      throw new Error(`onnxruntime refused the converted model: ${(error as Error).message.split('\n')[0]}`);
    }
  });
  // A session that fails to open fails the runs that need it; nobody else awaits it.
  session.catch(() => undefined);
  sessions.set(key, session);
}

async function drop(key: string): Promise<void> {
  const session = sessions.get(key);
  sessions.delete(key);
  await session?.then((s) => s.release()).catch(() => undefined);
}

async function run(message: Extract<ToWorker, { type: 'run' }>): Promise<void> {
  // Test hook: the worker dies holding a run, as a native crash would.
  if (message.exit) process.exit(1);
  try {
    const session = await sessions.get(message.key);
    if (!session) throw new Error(`no session for model ${message.key}`);
    const ort = await loadOrt();
    if (ort instanceof Error) throw ort;
    // An array of our own: its buffer moves to the main thread without another copy.
    const output = await runInPieces(ort, session, { input: message.inputName, output: message.outputName }, message.input, message.dims);
    post({ type: 'result', id: message.id, output }, [output.buffer as ArrayBuffer]);
  } catch (error) {
    post({ type: 'failed', id: message.id, message: (error as Error).message });
  }
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'load') open(message.key, message.bytes);
  else if (message.type === 'drop') void drop(message.key);
  else void run(message);
});
post({ type: 'ready' });
