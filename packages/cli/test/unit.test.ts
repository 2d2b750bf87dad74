import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeForStatus } from '../src/errors.ts';
import { duration, table } from '../src/output.ts';
import { applySet, parseBaseModel, type Spec } from '../src/spec.ts';

describe('--set', () => {
  it('sets hyperparameters, JSON when it parses and text otherwise; nests dotted keys', () => {
    const spec: Spec = { datasetId: 'd', baseModel: 'small_cnn' };
    for (const a of ['batchSize=16', 'optimizer=adam', 'nesterov=true', 'learningRate=1e-3', 'lrSchedule={"type":"cosine"}', 'earlyStopping.patience=3', 'earlyStopping.monitor=val_accuracy', 'classWeights=balanced', 'name=a=b'])
      applySet(spec, a);
    expect(spec.hyperparameters).toEqual({
      batchSize: 16,
      optimizer: 'adam',
      nesterov: true,
      learningRate: 0.001,
      lrSchedule: { type: 'cosine' },
      earlyStopping: { patience: 3, monitor: 'val_accuracy' },
      classWeights: 'balanced',
      name: 'a=b',
    });
  });

  it('puts the spec\'s own optional fields at the top level', () => {
    const spec: Spec = {};
    applySet(spec, 'maxRuntimeSeconds=600');
    applySet(spec, 'compareWithScratch=true');
    expect(spec).toEqual({ maxRuntimeSeconds: 600, compareWithScratch: true });
  });

  it('refuses malformed assignments and prototype keys', () => {
    for (const a of ['novalue', '=3', 'a..b=1', '__proto__.polluted=1', 'constructor=1']) expect(() => applySet({}, a)).toThrow();
    const spec: Spec = {};
    applySet(spec, 'head=3');
    expect(() => applySet(spec, 'head.dropout=0.2')).toThrow(/not an object/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('--base takes a zoo id, an earlier model as model:<id> or a bare id, or a custom base as base:<id>', () => {
    const id = '0b6e2c4e-1d2f-4a5b-8c7d-9e0f1a2b3c4d';
    expect(parseBaseModel('mobilenet_v2')).toBe('mobilenet_v2');
    expect(parseBaseModel(`model:${id}`)).toEqual({ modelId: id });
    expect(parseBaseModel(id)).toEqual({ modelId: id });
    expect(parseBaseModel(`base:${id}`)).toEqual({ baseModelId: id });
  });
});

describe('exit codes', () => {
  it('maps statuses and problem codes', () => {
    expect(exitCodeForStatus(404, 'job_not_found')).toBe(EXIT.notFound);
    expect(exitCodeForStatus(404, 'route_not_found')).toBe(EXIT.notFound);
    expect(exitCodeForStatus(401, 'unauthorized')).toBe(EXIT.auth);
    expect(exitCodeForStatus(403, 'forbidden')).toBe(EXIT.auth);
    expect(exitCodeForStatus(403, 'quota_exceeded')).toBe(EXIT.limited);
    expect(exitCodeForStatus(429, 'quota_exceeded')).toBe(EXIT.limited);
    expect(exitCodeForStatus(429, 'rate_limited')).toBe(EXIT.limited);
    expect(exitCodeForStatus(409, 'dataset_in_use')).toBe(EXIT.clientError);
    expect(exitCodeForStatus(400, 'validation_error')).toBe(EXIT.clientError);
    expect(exitCodeForStatus(500, 'internal_error')).toBe(EXIT.server);
    expect(exitCodeForStatus(503, 'queue_unavailable')).toBe(EXIT.server);
    expect(new Set(Object.values(EXIT)).size).toBe(Object.keys(EXIT).length);
  });
});

describe('output', () => {
  it('aligns tables, right-aligning numbers', () => {
    expect(table([{ a: 'x', n: 5 }, { a: 'long', n: 123 }], [{ header: 'NAME', value: (r) => r.a }, { header: 'N', value: (r) => r.n, right: true }])).toBe(
      ['NAME    N', 'x       5', 'long  123'].join('\n'),
    );
  });

  it('formats durations', () => {
    expect(duration(5)).toBe('5s');
    expect(duration(75)).toBe('1m15s');
    expect(duration(3 * 3600 + 120)).toBe('3h02m');
    expect(duration(null)).toBe('-');
  });
});
