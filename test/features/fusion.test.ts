import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import {
  computeGeometryStats,
  createAppearanceOnlyFusion,
  createConcatFusion,
  referenceGeometryStats,
} from '../../src/features/fusion.ts';
import { GEOMETRY_DIM } from '../../src/features/geometry.ts';

const APPEARANCE_DIM = 128;

/** Deterministic uniform numbers in [0, 1). */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** A random appearance vector of any length (deliberately not unit length). */
function appearance(next: () => number): Float32Array {
  return Float32Array.from({ length: APPEARANCE_DIM }, () => 3 * (next() - 0.5));
}

/** A random geometry descriptor near the reference distribution. */
function geometry(next: () => number): Float32Array {
  const { mean, std } = referenceGeometryStats();
  return Float32Array.from(mean, (value, j) => value + std[j] * 2 * (next() - 0.5));
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  return dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));
}

/** The z-scored geometry the fusion should use, computed independently here. */
function zScore(g: Float32Array): number[] {
  const { mean, std } = referenceGeometryStats();
  return Array.from(g, (value, j) => (value - mean[j]) / std[j]);
}

test('concat fusion output has unit length and dimension appearance + 126', (t) => {
  const fusion = createConcatFusion({ appearanceDim: APPEARANCE_DIM });
  const next = random(1);

  t.is(fusion.dim, APPEARANCE_DIM + GEOMETRY_DIM);
  for (let trial = 0; trial < 20; trial++) {
    const fused = fusion.fuse(appearance(next), geometry(next));
    t.is(fused.length, fusion.dim);
    t.true(Math.abs(Math.sqrt(dot(fused, fused)) - 1) < 1e-6);
  }
});

test('cosine of fused vectors = (1 - w) cos_app + w cos_geo', (t) => {
  const next = random(2);

  for (const w of [0.1, 0.3, 0.5, 0.9, 1]) {
    const fusion = createConcatFusion({ appearanceDim: APPEARANCE_DIM, geometryWeight: w });
    for (let trial = 0; trial < 10; trial++) {
      const [a1, a2, g1, g2] = [appearance(next), appearance(next), geometry(next), geometry(next)];

      const fused = cosine(fusion.fuse(a1, g1), fusion.fuse(a2, g2));
      const expected = (1 - w) * cosine(a1, a2) + w * cosine(zScore(g1), zScore(g2));

      t.true(Math.abs(fused - expected) < 1e-6, `w=${w}: ${fused} vs ${expected}`);
    }
  }
});

test('w = 0 gives the appearance-only vector, zero-padded', (t) => {
  const concat = createConcatFusion({ appearanceDim: APPEARANCE_DIM, geometryWeight: 0 });
  const only = createAppearanceOnlyFusion(APPEARANCE_DIM);
  const next = random(3);
  const [a1, a2, g1, g2] = [appearance(next), appearance(next), geometry(next), geometry(next)];

  const fused = concat.fuse(a1, g1);
  const plain = only.fuse(a1, g1);

  t.is(only.dim, APPEARANCE_DIM);
  t.true(plain.every((value, i) => Math.abs(value - fused[i]) < 1e-7));
  t.true(fused.subarray(APPEARANCE_DIM).every((value) => value === 0));
  const concatCosine = cosine(concat.fuse(a1, g1), concat.fuse(a2, g2));
  t.true(Math.abs(concatCosine - cosine(plain, only.fuse(a2, g2))) < 1e-6);
});

test('ids encode the method, weight and non-default statistics', (t) => {
  t.is(createConcatFusion({ appearanceDim: 512 }).id, 'concat-v1:w=0.01');
  t.is(createConcatFusion({ appearanceDim: 512, geometryWeight: 0.25 }).id, 'concat-v1:w=0.25');
  t.is(createConcatFusion({ appearanceDim: 512, geometryWeight: 0.125 }).id, 'concat-v1:w=0.125');
  t.is(
    createConcatFusion({ appearanceDim: 512, geometryStats: referenceGeometryStats() }).id,
    'concat-v1:w=0.01',
  );

  const custom = referenceGeometryStats();
  custom.mean[0] += 0.01;
  const customId = createConcatFusion({ appearanceDim: 512, geometryStats: custom }).id;
  t.regex(customId, /^concat-v1:w=0\.01:stats=[0-9a-f]{8}$/);
  t.is(createAppearanceOnlyFusion(512).id, 'appearance-v1');
});

test('dimension mismatches and bad values are invalid_argument', (t) => {
  const concat = createConcatFusion({ appearanceDim: APPEARANCE_DIM });
  const only = createAppearanceOnlyFusion(APPEARANCE_DIM);
  const next = random(4);
  const invalid = (fn: () => unknown) =>
    t.is(t.throws(fn, { instanceOf: ReidbError })?.code, 'invalid_argument');
  const ones = (length: number) => new Float32Array(length).fill(1);

  invalid(() => concat.fuse(ones(APPEARANCE_DIM + 1), geometry(next)));
  invalid(() => concat.fuse(appearance(next), new Float32Array(GEOMETRY_DIM - 1)));
  invalid(() => only.fuse(ones(512), geometry(next)));
  invalid(() => concat.fuse(new Float32Array(APPEARANCE_DIM), geometry(next)));

  const nan = appearance(next);
  nan[5] = Number.NaN;
  invalid(() => concat.fuse(nan, geometry(next)));

  invalid(() => createConcatFusion({ appearanceDim: 0 }));
  invalid(() => createConcatFusion({ appearanceDim: 128, geometryWeight: 1.5 }));
  const short = { mean: new Float32Array(10), std: ones(10) };
  invalid(() => createConcatFusion({ appearanceDim: 128, geometryStats: short }));
  invalid(() => createAppearanceOnlyFusion(-3));
});

test('computeGeometryStats gives per-feature mean and sample std', (t) => {
  const a = new Float32Array(GEOMETRY_DIM).fill(1);
  const b = new Float32Array(GEOMETRY_DIM).fill(3);

  const stats = computeGeometryStats([a, b]);

  t.true(stats.mean.every((value) => value === 2));
  t.true(stats.std.every((value) => Math.abs(value - Math.SQRT2) < 1e-6));
  const error = t.throws(() => computeGeometryStats([a]), { instanceOf: ReidbError });
  t.is(error?.code, 'invalid_argument');
});

test('the reference statistics are sane and returned as fresh copies', (t) => {
  const stats = referenceGeometryStats();

  t.is(stats.mean.length, GEOMETRY_DIM);
  t.true(stats.std.every((value) => value > 0 && Number.isFinite(value)));
  stats.mean[0] = 1e9;
  t.not(referenceGeometryStats().mean[0], 1e9);
});
