/**
 * Lets a long loop give timers and I/O a turn between its steps (batches, epochs): BullMQ's lock
 * renewal, heartbeats, progress events, cancellation. setImmediate runs after pending I/O
 * callbacks, where a resolved promise would run before them.
 */
export const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
