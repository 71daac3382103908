import test from 'ava';

import {
  type Affine,
  alignFace,
  applyAffine,
  invertAffine,
  solveAffine,
  warpAffine,
} from '../../src/face/align.ts';
import { ALIGN_LANDMARKS, templatePoints } from '../../src/face/template.ts';
import { ReidbError } from '../../src/errors.ts';
import type { Detection, FaceMesh, Point2, RgbImage } from '../../src/types.ts';

/** Deterministic pseudo-random numbers in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomPoints(n: number, next: () => number): Point2[] {
  return Array.from({ length: n }, () => [next() * 200 - 50, next() * 200 - 50] as Point2);
}

test('solveAffine recovers a known affine exactly from noiseless points', (t) => {
  const next = rng(1);
  const truth: Affine = [1.3, -0.4, 12.5, 0.25, 0.9, -7.75];
  const from = randomPoints(12, next);
  const to = from.map((p) => applyAffine(truth, p));
  const got = solveAffine(from, to);
  got.forEach((v, i) => t.true(Math.abs(v - truth[i]) < 1e-9, `param ${i}: ${v} vs ${truth[i]}`));
});

test('solveAffine is the least-squares solution with noise', (t) => {
  const next = rng(2);
  const truth: Affine = [0.8, 0.3, -4, -0.2, 1.1, 9];
  const from = randomPoints(30, next);
  const to = from.map((p) => {
    const q = applyAffine(truth, p);
    return [q[0] + (next() - 0.5) * 4, q[1] + (next() - 0.5) * 4] as Point2;
  });
  const got = solveAffine(from, to);

  // Direct computation: normal equations (A^T A) p = A^T b with rows [x, y, 1], Cramer's rule.
  const ata = [
    [0, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
  ];
  const atbx = [0, 0, 0];
  const atby = [0, 0, 0];
  from.forEach((p, i) => {
    const row = [p[0], p[1], 1];
    for (let r = 0; r < 3; r++) {
      for (let c = 0; c < 3; c++) ata[r][c] += row[r] * row[c];
      atbx[r] += row[r] * to[i][0];
      atby[r] += row[r] * to[i][1];
    }
  });
  const det3 = (m: number[][]): number =>
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) -
    m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
    m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  const cramer = (b: number[]): number[] =>
    [0, 1, 2].map(
      (k) => det3(ata.map((row, r) => row.map((v, c) => (c === k ? b[r] : v)))) / det3(ata),
    );
  const direct = [...cramer(atbx), ...cramer(atby)];
  got.forEach((v, i) => t.true(Math.abs(v - direct[i]) < 1e-6, `param ${i}: ${v} vs ${direct[i]}`));

  // And no small perturbation of the solution lowers the squared error.
  const sse = (a: Affine): number =>
    from.reduce((s, p, i) => {
      const q = applyAffine(a, p);
      return s + (q[0] - to[i][0]) ** 2 + (q[1] - to[i][1]) ** 2;
    }, 0);
  const best = sse(got);
  for (let k = 0; k < 6; k++) {
    for (const step of [-1e-3, 1e-3]) {
      const moved = [...got] as Affine;
      moved[k] += step;
      t.true(sse(moved) >= best);
    }
  }
});

test('solveAffine rejects fewer than 3 points and collinear points', (t) => {
  const two: Point2[] = [
    [0, 0],
    [1, 1],
  ];
  const e1 = t.throws(() => solveAffine(two, two), { instanceOf: ReidbError });
  t.is(e1?.code, 'invalid_argument');

  const line: Point2[] = [0, 1, 2, 3, 4].map((k) => [k * 2 + 1, k * 3 - 2] as Point2);
  const e2 = t.throws(() => solveAffine(line, line), { instanceOf: ReidbError });
  t.is(e2?.code, 'invalid_argument');

  const same: Point2[] = [
    [5, 5],
    [5, 5],
    [5, 5],
  ];
  t.throws(() => solveAffine(same, same), { instanceOf: ReidbError });
});

function pattern(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      data[o] = (x * 7) % 256;
      data[o + 1] = (y * 11) % 256;
      data[o + 2] = (x * y) % 256;
    }
  }
  return { data, width, height, channels: 3 };
}

test('warpAffine: identity copies, integer shift moves pixels, outside is black', (t) => {
  const img = pattern(20, 15);
  t.deepEqual(warpAffine(img, [1, 0, 0, 0, 1, 0], 20, 15).data, img.data);

  const shifted = warpAffine(img, [1, 0, 3, 0, 1, 2], 20, 15);
  for (const [x, y] of [
    [3, 2],
    [10, 7],
    [19, 14],
  ]) {
    const o = (y * 20 + x) * 3;
    const s = ((y - 2) * 20 + (x - 3)) * 3;
    t.deepEqual([...shifted.data.subarray(o, o + 3)], [...img.data.subarray(s, s + 3)]);
  }
  t.deepEqual([...shifted.data.subarray(0, 3)], [0, 0, 0]);
});

test('warpAffine: 2x upscale of a horizontal ramp interpolates linearly', (t) => {
  const width = 8;
  const data = new Uint8Array(width * 3);
  for (let x = 0; x < width; x++) data.fill(x * 20, x * 3, x * 3 + 3);
  const ramp: RgbImage = { data, width, height: 1, channels: 3 };

  const up = warpAffine(ramp, [2, 0, 0, 0, 2, 0], 16, 2);
  // Output pixel centre i + 0.5 comes from source x = (i + 0.5) / 2, i.e. index (i - 0.5) / 2.
  for (let i = 1; i < 15; i++) {
    t.is(up.data[i * 3], Math.round(((i - 0.5) / 2) * 20));
  }
  t.is(up.data[0], 0); // clamped to the edge pixel within half a pixel of the border
});

test('invertAffine undoes an affine', (t) => {
  const a: Affine = [1.2, 0.3, 5, -0.4, 0.9, -3];
  const p: Point2 = [17, -4];
  const q = applyAffine(invertAffine(a), applyAffine(a, p));
  t.true(Math.abs(q[0] - p[0]) < 1e-9 && Math.abs(q[1] - p[1]) < 1e-9);
});

test("alignFace 'mesh' maps template landmarks of a synthetic mesh onto the template", (t) => {
  // A mesh whose alignment landmarks are the template points rotated by 30 degrees and shifted.
  const size = 150;
  const target = templatePoints(size);
  const angle = Math.PI / 6;
  const move: Affine = [
    Math.cos(angle),
    -Math.sin(angle),
    40,
    Math.sin(angle),
    Math.cos(angle),
    10,
  ];
  const landmarks = new Float32Array(468 * 3);
  ALIGN_LANDMARKS.forEach((k, i) => {
    const [x, y] = applyAffine(move, target[i]);
    landmarks[k * 3] = x;
    landmarks[k * 3 + 1] = y;
  });
  const mesh: FaceMesh = { landmarks, score: 1 };
  const detection: Detection = {
    box: { x: 0, y: 0, width: 10, height: 10 },
    keypoints: [],
    score: 1,
  };

  const img = pattern(300, 300);
  const out = alignFace(img, detection, mesh, 'mesh', size);
  t.is(out.width, size);
  t.is(out.height, size);
  t.throws(() => alignFace(img, detection, null, 'mesh', size), { instanceOf: ReidbError });

  const boxed = { ...detection, box: { x: 100, y: 100, width: 80, height: 80 } };
  const raw = alignFace(img, boxed, null, 'raw', 64);
  t.is(raw.width, 64);
});
