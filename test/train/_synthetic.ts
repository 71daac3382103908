/**
 * Synthetic feature caches for the training tests: each identity has a random appearance
 * centre and geometry centre; each face is its centre plus Gaussian noise. Seeded, so a test
 * always sees the same cache.
 */
import type { CachedFace, FeatureCache } from '../../src/train/feature-cache.ts';
import { mulberry32 } from '../../src/train/sampler.ts';

export interface SyntheticOptions {
  identities?: number;
  facesPerIdentity?: number;
  appearanceDim?: number;
  geometryDim?: number;
  /** Noise std relative to the unit-variance centres. */
  appearanceNoise?: number;
  geometryNoise?: number;
  seed?: number;
}

export function syntheticCache(options: SyntheticOptions = {}): FeatureCache {
  const identities = options.identities ?? 12;
  const perIdentity = options.facesPerIdentity ?? 6;
  const appearanceDim = options.appearanceDim ?? 16;
  const geometryDim = options.geometryDim ?? 6;
  const random = mulberry32(options.seed ?? 7);
  const gaussian = () => {
    const u = Math.max(random(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  };
  const vector = (dim: number, centre?: Float32Array, noise = 0) =>
    Float32Array.from({ length: dim }, (_, i) => (centre ? centre[i] : 0) + noise * gaussian());

  const faces: CachedFace[] = [];
  for (let id = 0; id < identities; id++) {
    const appearanceCentre = vector(appearanceDim, undefined, 1);
    const geometryCentre = vector(geometryDim, undefined, 1);
    for (let f = 0; f < perIdentity; f++) {
      const appearance = vector(appearanceDim, appearanceCentre, options.appearanceNoise ?? 0.8);
      let norm = 0;
      for (const v of appearance) norm += v * v;
      for (let i = 0; i < appearanceDim; i++) appearance[i] /= Math.sqrt(norm);
      faces.push({
        file: `id${id}/face${f}.jpg`,
        identity: `id${String(id).padStart(2, '0')}`,
        appearance,
        geometry: vector(geometryDim, geometryCentre, options.geometryNoise ?? 0.5),
        yaw: 0,
        pitch: 0,
        roll: 0,
        quality: 1,
      });
    }
  }
  return {
    version: 1,
    embedderId: 'synthetic',
    alignMode: 'mesh',
    appearanceDim,
    geometryDim,
    faces,
    skipped: [],
  };
}

/** Small MLP widths so the tests run in a second or two. */
export const TINY_SIZES = { hidden1: 32, hidden2: 16, output: 8 };
