import test from 'ava';

import {
  batchHardTripletLoss,
  cosineDistanceMatrix,
  crossEntropyLoss,
  fusionLoss,
} from '../../src/train/losses.ts';
import { initTf, tf } from '../../src/tf/runtime.ts';

test.before(async () => {
  await initTf('cpu');
});

const r = Math.SQRT1_2;

/**
 * Violated batch, 2-D, identities A A B B:
 *   a0 = (1, 0), a1 = (0, 1), b0 = (r, r), b1 = (-1, 0)          (r = 1 / sqrt 2 = 0.707107)
 * cos: a0.a1 = 0, a0.b0 = r, a0.b1 = -1, a1.b0 = r, a1.b1 = 0, b0.b1 = -r
 * d = 1 - cos: d(a0,a1) = 1, d(a0,b0) = 0.292893, d(a0,b1) = 2, d(a1,b0) = 0.292893,
 *              d(a1,b1) = 1, d(b0,b1) = 1.707107
 * anchor  hardest p        hardest n               gap d(a,n) - d(a,p)
 *   a0    1                min(0.292893, 2) = 0.292893    -0.707107
 *   a1    1                min(0.292893, 1) = 0.292893    -0.707107
 *   b0    1.707107         min(0.292893, 0.292893)        -1.414214
 *   b1    1.707107         min(2, 1) = 1                  -0.707107
 * alpha = mean gap = -3.535534 / 4 = -0.883883 < 0, clamped to 0.
 * loss = mean relu(-gap + 0) = (0.707107 * 3 + 1.414214) / 4 = 0.883883.
 */
const violated = {
  x: [
    [1, 0],
    [0, 1],
    [r, r],
    [-1, 0],
  ],
  labels: [0, 0, 1, 1],
};

/**
 * Satisfied batch, identities A A B B:
 *   a0 = (1, 0), a1 = (0.8, 0.6), b0 = (-1, 0), b1 = (-0.6, 0.8)
 * cos: a0.a1 = 0.8, a0.b0 = -1, a0.b1 = -0.6, a1.b0 = -0.8, a1.b1 = 0, b0.b1 = 0.6
 * d: d(a0,a1) = 0.2, d(a0,b0) = 2, d(a0,b1) = 1.6, d(a1,b0) = 1.8, d(a1,b1) = 1, d(b0,b1) = 0.4
 * anchor  p     n                      gap
 *   a0    0.2   min(2, 1.6) = 1.6      1.4
 *   a1    0.2   min(1.8, 1) = 1        0.8
 *   b0    0.4   min(2, 1.8) = 1.8      1.4
 *   b1    0.4   min(1.6, 1) = 1        0.6
 * Every triplet is satisfied (gap > 0). alpha = (1.4 + 0.8 + 1.4 + 0.6) / 4 = 1.05.
 * loss = mean relu(alpha - gap) = (0 + 0.25 + 0 + 0.45) / 4 = 0.175: the adaptive margin still
 * pushes the two triplets below the batch's average gap. With a fixed margin 0 the loss is 0.
 */
const satisfied = {
  x: [
    [1, 0],
    [0.8, 0.6],
    [-1, 0],
    [-0.6, 0.8],
  ],
  labels: [0, 0, 1, 1],
};

function triplet(batch: { x: number[][]; labels: number[] }, margin?: 'adaptive' | number) {
  return tf.tidy(() => {
    const result = batchHardTripletLoss(
      tf.tensor2d(batch.x),
      tf.tensor1d(batch.labels, 'int32'),
      margin === undefined ? {} : { margin },
    );
    return {
      loss: result.loss.dataSync()[0],
      margin: result.margin.dataSync()[0],
      valid: result.validAnchors.dataSync()[0],
    };
  });
}

test('cosine distance matrix by hand (violated batch)', (t) => {
  const d = tf.tidy(() => cosineDistanceMatrix(tf.tensor2d(violated.x)).arraySync());
  const expected = [
    [0, 1, 1 - r, 2],
    [1, 0, 1 - r, 1],
    [1 - r, 1 - r, 0, 1 + r],
    [2, 1, 1 + r, 0],
  ];
  d.forEach((row, i) => row.forEach((v, j) => t.true(Math.abs(v - expected[i][j]) < 1e-6)));
});

test('cosine distance normalises its input (scaled rows give the same distances)', (t) => {
  const [a, b] = tf.tidy(() => [
    cosineDistanceMatrix(tf.tensor2d(satisfied.x)).arraySync(),
    cosineDistanceMatrix(
      tf.mul(tf.tensor2d(satisfied.x), tf.tensor2d([[3], [0.5], [2], [7]])) as tf.Tensor2D,
    ).arraySync(),
  ]);
  a.forEach((row, i) => row.forEach((v, j) => t.true(Math.abs(v - b[i][j]) < 1e-6)));
});

test('batch-hard triplet, violated batch: negative alpha is clamped at 0, loss 0.883883', (t) => {
  const result = triplet(violated);
  t.is(result.margin, 0);
  t.is(result.valid, 4);
  t.true(Math.abs(result.loss - 0.883883) < 1e-5, `${result.loss}`);
});

test('batch-hard triplet, all satisfied: alpha 1.05, loss 0.175; margin 0 gives 0', (t) => {
  const adaptive = triplet(satisfied);
  t.true(Math.abs(adaptive.margin - 1.05) < 1e-5, `${adaptive.margin}`);
  t.true(Math.abs(adaptive.loss - 0.175) < 1e-5, `${adaptive.loss}`);
  t.is(triplet(satisfied, 0).loss, 0);
  // Fixed margin 0.5: relu(0.5 - gap) is 0 for every gap above (0.6 is the smallest).
  t.is(triplet(satisfied, 0.5).loss, 0);
});

test('the adaptive margin carries no gradient: same gradient as the fixed margin 1.05', (t) => {
  const gradient = (margin: 'adaptive' | number) =>
    tf.tidy(() => {
      const labels = tf.tensor1d(satisfied.labels, 'int32');
      const f = (x: tf.Tensor) => batchHardTripletLoss(x as tf.Tensor2D, labels, { margin }).loss;
      return tf.grad(f)(tf.tensor2d(satisfied.x)).arraySync() as number[][];
    });
  const adaptive = gradient('adaptive');
  const fixed = gradient(1.05);
  t.true(
    adaptive.flat().some((v) => Math.abs(v) > 1e-3),
    'a non-zero gradient',
  );
  adaptive.forEach((row, i) => row.forEach((v, j) => t.true(Math.abs(v - fixed[i][j]) < 1e-5)));
});

test('anchors without a positive in the batch are left out of the mean', (t) => {
  // The satisfied batch plus a fifth face of a third identity, alone in the batch.
  const batch = { x: [...satisfied.x, [0, -1]], labels: [...satisfied.labels, 2] };
  const result = triplet(batch, 0);
  t.is(result.valid, 4);
  // Its presence can only shorten hardest negatives: d(a1, c) = 1.6, d(b1, c) = 1.8, so the
  // gaps stay as before and the fixed-margin-0 loss stays 0.
  t.is(result.loss, 0);
});

/**
 * 2-class toy: logits [[2, 0], [0.5, 1.5]], labels [0, 1].
 * row 0: -log softmax = log(e^2 + e^0) - 2 = log(8.389056) - 2 = 0.126928
 * row 1: log(e^0.5 + e^1.5) - 1.5 = log(6.130410) - 1.5 = 0.313262
 * mean = 0.220095
 */
test('cross-entropy equals -log softmax by hand', (t) => {
  const ce = tf.tidy(
    () =>
      crossEntropyLoss(
        tf.tensor2d([
          [2, 0],
          [0.5, 1.5],
        ]),
        tf.tensor1d([0, 1], 'int32'),
      ).dataSync()[0],
  );
  t.true(Math.abs(ce - 0.220095) < 1e-5, `${ce}`);
});

test('total = 0.7 triplet + 0.3 CE by default; weights are configurable and checked', (t) => {
  const logits = [
    [2, 0],
    [2, 0],
    [0.5, 1.5],
    [0.5, 1.5],
  ];
  // CE: rows 0, 1 are class 0 (0.126928 each), rows 2, 3 class 1 (0.313262 each): 0.220095.
  const run = (weights?: { triplet: number; ce: number }) =>
    tf.tidy(() => {
      const loss = fusionLoss(
        tf.tensor2d(satisfied.x),
        tf.tensor2d(logits),
        tf.tensor1d(satisfied.labels, 'int32'),
        weights,
      );
      return [loss.total, loss.triplet, loss.ce].map((s) => s.dataSync()[0]);
    });
  const [total, tri, ce] = run();
  t.true(Math.abs(tri - 0.175) < 1e-5);
  t.true(Math.abs(ce - 0.220095) < 1e-5);
  t.true(Math.abs(total - (0.7 * 0.175 + 0.3 * 0.220095)) < 1e-5);
  t.true(Math.abs(run({ triplet: 0.5, ce: 0.5 })[0] - (0.5 * 0.175 + 0.5 * 0.220095)) < 1e-5);
  t.throws(() => run({ triplet: 0, ce: 0 }), { message: /loss weights/ });
  t.throws(() => run({ triplet: -1, ce: 1 }), { message: /loss weights/ });
});

test('no tensor is left behind', (t) => {
  const before = tf.memory().numTensors;
  triplet(violated);
  triplet(satisfied, 0.2);
  t.is(tf.memory().numTensors, before);
});
