/**
 * Seeded random numbers and the P x K batch sampler of the fusion training (METHOD.md,
 * "Training the fusion": 16 identities x 8 images = 128 per batch). Pure: every sampler owns its
 * random state; nothing is shared between samplers or kept at module level.
 */
import { ReidbError } from '../errors.ts';

/** A seeded generator of floats in [0, 1). */
export type Random = () => number;

/**
 * mulberry32: a small 32-bit generator, good enough for shuffling and sampling, and identical on
 * every platform for a given seed (Math.random is neither seeded nor reproducible).
 */
export function mulberry32(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [0, n). */
export function randomInt(random: Random, n: number): number {
  return Math.floor(random() * n);
}

/** Fisher-Yates shuffle in place; returns the same array. */
export function shuffleInPlace<T>(items: T[], random: Random): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = randomInt(random, i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

export interface PKSamplerOptions {
  /** Identities per batch (default 16); capped by the number of identities. */
  p?: number;
  /** Images per identity in a batch (default 8). */
  k?: number;
  /** Seed of the sampler's own generator (default 1). */
  seed?: number;
}

export interface PKSampler {
  /** Identities per batch after the cap. */
  readonly p: number;
  readonly k: number;
  /** Batches in one epoch: ceil(faces / (p * k)), at least 1. */
  readonly batchesPerEpoch: number;
  /**
   * The next epoch's batches. Each batch holds p * k face indices, K consecutive ones per
   * identity, p distinct identities. Successive calls continue the same random stream.
   */
  epoch(): number[][];
}

/**
 * A P x K sampler over face labels (one label per face; strings or numbers). One epoch visits
 * every face about once: each identity's faces are shuffled and cut into chunks of K, and a batch
 * takes one chunk from each of P identities, drawn with probability proportional to the chunks
 * they have left, so identities with many faces are spread over the epoch instead of piling up
 * at its end.
 *
 * Sampling with replacement, where it happens:
 * - an identity with fewer than K faces (or a last chunk shorter than K) is padded with faces
 *   drawn again, with replacement, from the same identity, so a batch always holds exactly K
 *   images per identity and may hold the same face twice (a positive at distance 0, harmless to
 *   a batch-hard loss, which takes the farthest positive);
 * - when fewer than P identities still have chunks, the batch is completed with fresh chunks of
 *   other identities drawn at random, so every batch has exactly P distinct identities.
 *
 * Throws invalid_argument for empty labels or non-positive p / k.
 */
export function createPKSampler(
  labels: ReadonlyArray<number> | ReadonlyArray<string>,
  options: PKSamplerOptions = {},
): PKSampler {
  const k = options.k ?? 8;
  const requestedP = options.p ?? 16;
  const random = mulberry32(options.seed ?? 1);
  if (!Number.isInteger(k) || k < 1 || !Number.isInteger(requestedP) || requestedP < 1) {
    const message = `p and k must be positive integers, got p=${requestedP} k=${k}`;
    throw new ReidbError('invalid_argument', message, { input: 'p' });
  }
  if (labels.length === 0) {
    throw new ReidbError('invalid_argument', 'PK sampler needs at least one face', {
      input: 'labels',
    });
  }

  // Faces by identity, identities in order of first appearance (deterministic).
  const byIdentity = new Map<number | string, number[]>();
  labels.forEach((label, index) => {
    const list = byIdentity.get(label);
    if (list) list.push(index);
    else byIdentity.set(label, [index]);
  });
  const groups = [...byIdentity.values()];
  const p = Math.min(requestedP, groups.length);
  const batchesPerEpoch = Math.max(1, Math.ceil(labels.length / (p * k)));

  /** One chunk of K faces of identity g: its shuffled faces from `start`, padded if short. */
  const chunkOf = (faces: number[], start: number): number[] => {
    const chunk = faces.slice(start, start + k);
    while (chunk.length < k) chunk.push(faces[randomInt(random, faces.length)]);
    return chunk;
  };

  const epoch = (): number[][] => {
    // Cut every identity's shuffled faces into chunks of K.
    const chunks: number[][][] = groups.map((faces) => {
      const shuffled = shuffleInPlace([...faces], random);
      const out: number[][] = [];
      for (let start = 0; start < shuffled.length; start += k) out.push(chunkOf(shuffled, start));
      return out;
    });

    // Fill batches: P identities drawn by the chunks they have left, then completed if needed.
    const batches: number[][] = [];
    for (let b = 0; b < batchesPerEpoch; b++) {
      const chosen = new Set<number>();
      const batch: number[] = [];
      while (chosen.size < p) {
        const g = drawByRemaining(chunks, chosen, random);
        chosen.add(g);
        const left = chunks[g];
        if (left.length > 0) batch.push(...left.pop()!);
        else batch.push(...chunkOf(shuffleInPlace([...groups[g]], random), 0));
      }
      batches.push(batch);
    }
    return batches;
  };

  return { p, k, batchesPerEpoch, epoch };
}

/**
 * An identity not in `chosen`, drawn with probability proportional to its chunks left; when none
 * has chunks left, uniformly among those not chosen.
 */
function drawByRemaining(chunks: number[][][], chosen: Set<number>, random: Random): number {
  let total = 0;
  for (let g = 0; g < chunks.length; g++) if (!chosen.has(g)) total += chunks[g].length;

  if (total > 0) {
    let target = random() * total;
    for (let g = 0; g < chunks.length; g++) {
      if (chosen.has(g) || chunks[g].length === 0) continue;
      target -= chunks[g].length;
      if (target < 0) return g;
    }
  }

  // Fall-back (no chunks left, or rounding at the end of the walk): uniform over the rest.
  const free: number[] = [];
  for (let g = 0; g < chunks.length; g++) if (!chosen.has(g)) free.push(g);
  if (total > 0) {
    const withChunks = free.filter((g) => chunks[g].length > 0);
    if (withChunks.length > 0) return withChunks[withChunks.length - 1];
  }
  return free[randomInt(random, free.length)];
}
