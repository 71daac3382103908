import type { FusionModelHeader } from '../../src/features/gated-fusion-types.ts';

/** Deterministic values in [-1, 1). */
export function noise(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** The training and metrics parts of a model header for a model that was never trained. */
export function untrainedSummary(): Pick<FusionModelHeader, 'training' | 'metrics'> {
  return {
    training: {
      data: [],
      trainIdentities: 0,
      valIdentities: 0,
      trainFaces: 0,
      valFaces: 0,
      epochs: 0,
      loss: { triplet: 0.7, ce: 0.3 },
      optimiser: 'none',
      seed: 0,
    },
    metrics: { valMAP: 0, valRank1: 0 },
  };
}
