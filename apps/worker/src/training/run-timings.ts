/** The phases a run's time is reported in (GET /v1/jobs/:id → timings). */
export type Phase = 'download' | 'decode' | 'adaptation' | 'frozenForward' | 'training' | 'evaluation' | 'comparison' | 'export';

/**
 * Wall-clock milliseconds per phase of one run. Phases may nest (the frozen forward pass runs
 * inside training): `within` subtracts a nested phase's time from the enclosing one, so the
 * phases add up to the run's time instead of counting a pass twice.
 */
export class RunTimings {
  private readonly ms = new Map<Phase, number>();

  async time<T>(phase: Phase, work: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await work();
    } finally {
      this.add(phase, performance.now() - start);
    }
  }

  /** Times `work` as `phase`, minus what the nested `inner` phase accumulated meanwhile. */
  async within<T>(phase: Phase, inner: Phase, work: () => Promise<T>): Promise<T> {
    const innerBefore = this.ms.get(inner) ?? 0;
    const start = performance.now();
    try {
      return await work();
    } finally {
      this.add(phase, performance.now() - start - ((this.ms.get(inner) ?? 0) - innerBefore));
    }
  }

  add(phase: Phase, ms: number): void {
    this.ms.set(phase, (this.ms.get(phase) ?? 0) + ms);
  }

  toJSON(): Partial<Record<Phase, number>> {
    return Object.fromEntries([...this.ms].map(([phase, ms]) => [phase, Math.round(ms)]));
  }
}
