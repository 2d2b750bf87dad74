import { describe, expect, it } from 'vitest';
import { isTransientError } from '../src/transient.ts';

// Which failures a job attempt retries (transient) and which end it at once.
describe('isTransientError', () => {
  const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

  it.each([
    ['a refused connection', withCode('ECONNREFUSED')],
    ['Prisma pool exhaustion', withCode('P2024')],
    ['a Prisma transaction that could not start in time', withCode('P2028', 'Transaction API error: Unable to start a transaction in the given time.')],
    ['the same, by message only (wrapped by the adapter)', new Error('Transaction API error: Unable to start a transaction in the given time.')],
    ['a Postgres shutdown (57P01)', withCode('57P01')],
    ['an S3 5xx', Object.assign(new Error('slow down'), { $metadata: { httpStatusCode: 503 } })],
    ['a transient cause under a wrapper', new Error('run failed', { cause: withCode('ECONNRESET') })],
  ])('retries %s', (_, error) => {
    expect(isTransientError(error)).toBe(true);
  });

  it.each([
    ['a unique-constraint violation', withCode('P2002')],
    ['a syntax error in SQL (42601)', withCode('42601')],
    ['an S3 404', Object.assign(new Error('no such key'), { $metadata: { httpStatusCode: 404 } })],
    ['a plain bug', new TypeError('undefined is not a function')],
    ['not an error at all', 'a string'],
  ])('does not retry %s', (_, error) => {
    expect(isTransientError(error)).toBe(false);
  });
});
