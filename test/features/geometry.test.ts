import test from 'ava';
import type { ExecutionContext } from 'ava';

import { ReidbError } from '../../src/errors.ts';
import { createFaceDetector } from '../../src/face/detector.ts';
import { createFaceMesher } from '../../src/face/mesh.ts';
import {
  GEOMETRY_DIM,
  GEOMETRY_FEATURES,
  geometricDescriptor,
} from '../../src/features/geometry.ts';
import { decodeImage } from '../../src/image/decode.ts';
import { dataPath, hasData } from '../helpers/data.ts';

const LANDMARKS = 468;
const RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246];
const LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466];

/** Deterministic uniform numbers in [0, 1) (a 32-bit LCG; plenty for test geometry). */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/**
 * A synthetic face-like mesh in pixel units: the eye contours on ellipses around two eye
 * centres 40 px apart, every other landmark at a random point on the front of an ellipsoid.
 */
function syntheticMesh(seed: number): Float32Array {
  const next = random(seed);
  const mesh = new Float32Array(LANDMARKS * 3);
  for (let i = 0; i < LANDMARKS; i++) {
    const u = 2 * next() - 1;
    const v = 2 * next() - 1;
    mesh.set([50 * u, 65 * v, -30 * Math.sqrt(Math.max(0, 1 - u * u - 0.6 * v * v))], 3 * i);
  }
  for (const [eye, centreX] of [
    [RIGHT_EYE, -20],
    [LEFT_EYE, 20],
  ] as const) {
    eye.forEach((index, k) => {
      const phi = (2 * Math.PI * k) / eye.length;
      mesh.set([centreX + 10 * Math.cos(phi), -10 + 4 * Math.sin(phi), -5 * next()], 3 * index);
    });
  }
  return mesh;
}

/** A random similarity transform: uniform 3-D rotation, scale 0.2-5, translation +-500. */
function randomSimilarity(next: () => number): (p: number[]) => number[] {
  // A uniform rotation from a normalised quaternion of four Gaussians (Box-Muller).
  const gauss = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  let [w, x, y, z] = [gauss(), gauss(), gauss(), gauss()];
  const length = Math.hypot(w, x, y, z);
  [w, x, y, z] = [w / length, x / length, y / length, z / length];
  const r = [
    [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
    [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
    [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
  ];
  const scale = 0.2 * 25 ** next();
  const shift = [0, 1, 2].map(() => 1000 * next() - 500);
  return (p) =>
    r.map((row, i) => scale * (row[0] * p[0] + row[1] * p[1] + row[2] * p[2]) + shift[i]);
}

/** Applies `transform` to every landmark (in float64, stored as float32 like a real mesh). */
function transformMesh(mesh: Float32Array, transform: (p: number[]) => number[]): Float32Array {
  const out = new Float32Array(mesh.length);
  for (let i = 0; i < mesh.length; i += 3) {
    out.set(transform([mesh[i], mesh[i + 1], mesh[i + 2]]), i);
  }
  return out;
}

/** ||a - b|| / ||a||. */
function relativeChange(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let base = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i] - b[i]) ** 2;
    base += a[i] ** 2;
  }
  return Math.sqrt(diff / base);
}

/** Asserts the descriptor is unchanged by 50 random similarity transforms of `mesh`. */
function assertInvariant(t: ExecutionContext, mesh: Float32Array, seed: number): number {
  const reference = geometricDescriptor(mesh);
  const next = random(seed);
  let worst = 0;
  for (let trial = 0; trial < 50; trial++) {
    const moved = geometricDescriptor(transformMesh(mesh, randomSimilarity(next)));
    worst = Math.max(worst, relativeChange(reference, moved));
  }
  t.true(worst < 1e-4, `largest relative change over 50 transforms: ${worst.toExponential(2)}`);
  return worst;
}

/** Asserts 126 finite numbers in each feature kind's range. */
function assertPlausible(t: ExecutionContext, descriptor: Float32Array, real: boolean) {
  t.is(descriptor.length, GEOMETRY_DIM);
  t.true(descriptor.every(Number.isFinite), 'all finite');
  GEOMETRY_FEATURES.forEach((feature, i) => {
    const value = descriptor[i];
    const ok =
      feature.kind === 'angle'
        ? value >= 0 && value <= Math.PI + 1e-6
        : feature.kind === 'curvature' && feature.name.endsWith('_chord_arc')
          ? value > 0 && value <= 1 + 1e-6
          : value >= 0;
    if (!ok) t.fail(`${feature.name} = ${value} is out of range`);
    // On a real face the two sides differ by far less than a factor 2, and nothing is 10 IODs.
    if (real && feature.kind === 'ratio' && !(value > 0.5 && value < 2)) {
      t.fail(`${feature.name} = ${value} is implausible for a real face`);
    }
    if (real && feature.kind === 'distance' && !(value > 0.01 && value < 10)) {
      t.fail(`${feature.name} = ${value} is implausible for a real face`);
    }
  });
}

test('the feature table has 126 uniquely named entries of the four kinds', (t) => {
  t.is(GEOMETRY_DIM, 126);
  t.is(GEOMETRY_FEATURES.length, GEOMETRY_DIM);
  t.is(new Set(GEOMETRY_FEATURES.map((feature) => feature.name)).size, GEOMETRY_DIM);

  const counts: Record<string, number> = {};
  for (const feature of GEOMETRY_FEATURES) counts[feature.kind] = (counts[feature.kind] ?? 0) + 1;
  t.deepEqual(counts, { distance: 50, angle: 27, ratio: 17, curvature: 32 });
  for (const feature of GEOMETRY_FEATURES) {
    t.true(feature.landmarks.length >= 2 && feature.landmarks.every((i) => i >= 0 && i < 468));
  }
});

test('a synthetic mesh gives 126 finite numbers, unchanged by 50 similarity transforms', (t) => {
  for (const seed of [1, 2, 3]) {
    const mesh = syntheticMesh(seed);
    assertPlausible(t, geometricDescriptor(mesh), false);
    assertInvariant(t, mesh, 100 + seed);
  }
});

test('a reflection of the coordinates leaves the descriptor unchanged', (t) => {
  const mesh = syntheticMesh(4);
  const mirrored = transformMesh(mesh, ([x, y, z]) => [-x, y, z]);

  t.true(relativeChange(geometricDescriptor(mesh), geometricDescriptor(mirrored)) < 1e-6);
});

test('the descriptor changes when the face shape changes (10 % taller)', (t) => {
  const mesh = syntheticMesh(5);
  const taller = transformMesh(mesh, ([x, y, z]) => [x, 1.1 * y, z]);

  const change = relativeChange(geometricDescriptor(mesh), geometricDescriptor(taller));

  t.true(change > 0.01, `relative change ${change.toExponential(2)}`);
});

test('degenerate meshes are invalid_argument and never give NaN', (t) => {
  const bad = (mesh: Float32Array) =>
    t.throws(() => geometricDescriptor(mesh), { instanceOf: ReidbError })?.code;

  t.is(bad(new Float32Array(LANDMARKS * 3)), 'invalid_argument');
  t.is(bad(new Float32Array(100)), 'invalid_argument');

  const nan = syntheticMesh(6);
  nan[3 * 152 + 1] = Number.NaN;
  t.is(bad(nan), 'invalid_argument');

  // Both eyes collapsed onto one point: no scale to normalise by.
  const oneEye = syntheticMesh(7);
  for (const index of [...RIGHT_EYE, ...LEFT_EYE]) oneEye.set([0, -10, 0], 3 * index);
  t.is(bad(oneEye), 'invalid_argument');

  // Everything but the eyes collapsed: zero-length contours and ratios stay finite.
  const flat = syntheticMesh(8);
  const eyes = new Set([...RIGHT_EYE, ...LEFT_EYE]);
  for (let i = 0; i < LANDMARKS; i++) if (!eyes.has(i)) flat.set([0, 0, 0], 3 * i);
  t.true(geometricDescriptor(flat).every(Number.isFinite));
});

test('real Face Mesh meshes of 3 LFW photos: plausible and invariant', async (t) => {
  if (!hasData(t)) return;
  const detector = await createFaceDetector({ backend: 'wasm' });
  const mesher = await createFaceMesher({ backend: 'wasm' });
  try {
    const photos = ['Aaron_Peirsol', 'Abdullah', 'Abdoulaye_Wade'];
    const descriptors: Float32Array[] = [];
    for (const [k, name] of photos.entries()) {
      const image = await decodeImage(dataPath('lfw_multi', name, `${name}_0001.jpg`));
      const [detection] = await detector.detect(image);
      t.truthy(detection, `a face in ${name}_0001.jpg`);
      const mesh = await mesher.estimate(image, detection);

      const descriptor = geometricDescriptor(mesh.landmarks);

      assertPlausible(t, descriptor, true);
      const worst = assertInvariant(t, mesh.landmarks, 200 + k);
      const taller = transformMesh(mesh.landmarks, ([x, y, z]) => [x, 1.1 * y, z]);
      const change = relativeChange(descriptor, geometricDescriptor(taller));
      t.true(change > 1e-2, `10 % taller face: relative change ${change.toExponential(2)}`);
      t.log(`${name}: invariance ${worst.toExponential(1)}, taller ${change.toExponential(1)}`);
      descriptors.push(descriptor);
    }

    // Different people differ by far more than the numerical noise of the invariance check.
    const between = [1, 2].map((k) => relativeChange(descriptors[0], descriptors[k]));
    t.log(`between people: ${between.map((value) => value.toExponential(1)).join(', ')}`);
    t.true(between.every((value) => value > 1e-2));
  } finally {
    detector.close();
    mesher.close();
  }
});
