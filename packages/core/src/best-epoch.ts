// Which epoch is "best": the rule training uses to keep weights, and the one the API and
// checkpoint retention use to name the best epoch, so all three always agree.

export interface EpochScore {
  epoch: number;
  trainLoss: number;
  trainAcc: number;
  valLoss: number | null;
  valAcc: number | null;
}

/** Higher accuracy (validation when there is one, else training), then lower loss, then earlier. */
export function isBetterEpoch(a: EpochScore, b: EpochScore): boolean {
  const accA = a.valAcc ?? a.trainAcc;
  const accB = b.valAcc ?? b.trainAcc;
  if (accA !== accB) return accA > accB;
  const lossA = a.valLoss ?? a.trainLoss;
  const lossB = b.valLoss ?? b.trainLoss;
  if (lossA !== lossB) return lossA < lossB;
  return a.epoch < b.epoch;
}

export function bestEpoch<T extends EpochScore>(epochs: readonly T[]): T | null {
  let best: T | null = null;
  for (const e of epochs) if (!best || isBetterEpoch(e, best)) best = e;
  return best;
}
