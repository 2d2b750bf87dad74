import { describe, expect, it } from 'vitest';
import { DomainError } from '@finetune/core';
import { classifyFailure } from '../src/training/failure.ts';

// Which failures a job retries. The messages are the ones the real parts throw: emscripten's
// aborts from tfjs' wasm backend, the AWS SDK's service errors, Node's socket errors, Prisma's.

const context = { backend: 'wasm', batchSize: 16, strategy: 'full' };

function withProps(message: string, props: Record<string, unknown>): Error {
  return Object.assign(new Error(message), props);
}

describe('classifyFailure', () => {
  it.each([
    'Aborted(). Build with -sASSERTIONS for more info.',
    'RuntimeError: memory access out of bounds',
    'table index is out of bounds',
    'Cannot enlarge memory arrays to size 2151677952 bytes (OOM).',
  ])('a backend abort (%s) fails at once with what to change', (message) => {
    const failure = classifyFailure(new Error(message), context);
    expect(failure.retry).toBe(false);
    expect(failure.code).toBe('backend_out_of_memory');
    expect(failure.message).toContain('batchSize 16');
    expect(failure.message).toContain('e.g. to 8');
    expect(failure.message).not.toContain('Aborted');
  });

  it('a domain error keeps its code and is not retried', () => {
    expect(classifyFailure(new DomainError('empty_class', 'no image for class 3', 422), context)).toEqual({ code: 'empty_class', message: 'no image for class 3', retry: false });
  });

  it.each([
    ['S3 answering 503', withProps('Service Unavailable', { name: 'ServiceUnavailable', $metadata: { httpStatusCode: 503 } })],
    ['S3 throttling', withProps('Slow Down', { name: 'SlowDown', $retryable: { throttling: true }, $metadata: { httpStatusCode: 503 } })],
    ['S3 down', withProps('connect ECONNREFUSED 127.0.0.1:9000', { code: 'ECONNREFUSED' })],
    ['a reset socket', withProps('socket hang up', { code: 'ECONNRESET' })],
    ['Postgres unreachable (Prisma)', withProps("Can't reach database server at 127.0.0.1:5432", { code: 'P1001' })],
    ['Postgres shutting down', withProps('terminating connection due to administrator command', { code: '57P01' })],
    ['a wrapped cause', new Error('checkpoint upload failed', { cause: withProps('connect ECONNREFUSED', { code: 'ECONNREFUSED' }) })],
  ])('%s is transient and retried', (_, error) => {
    const failure = classifyFailure(error, context);
    expect(failure).toMatchObject({ code: 'dependency_unavailable', retry: true });
  });

  it.each([
    ['a bug', new TypeError("Cannot read properties of undefined (reading 'shape')")],
    ['S3 access denied', withProps('Access Denied', { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } })],
    ['a unique violation', withProps('Unique constraint failed', { code: 'P2002' })],
  ])('%s fails the same way every time: not retried', (_, error) => {
    expect(classifyFailure(error, context)).toMatchObject({ code: 'training_error', retry: false });
  });
});
