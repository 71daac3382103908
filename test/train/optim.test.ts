import test from 'ava';

import {
  cosineAnnealing,
  createAdamW,
  createSgd,
  stepDecay,
  type Optimiser,
} from '../../src/train/optim.ts';
import { initTf, tf } from '../../src/tf/runtime.ts';

test.before(async () => {
  await initTf('cpu');
});

/** Runs `steps` updates on f(x) = (x - 3)^2 from x = 1; returns x after each step. */
function minimise(create: (x: tf.Variable) => Optimiser, steps: number): number[] {
  const x = tf.tidy(() => tf.variable(tf.scalar(1)));
  const optimiser = create(x);
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const { value, grads } = tf.variableGrads(() => tf.square(tf.sub(x, 3)) as tf.Scalar, [x]);
    optimiser.step(grads, 0.1);
    tf.dispose([value, ...Object.values(grads)]);
    out.push(x.dataSync()[0]);
  }
  optimiser.dispose();
  x.dispose();
  return out;
}

/**
 * AdamW, lr 0.1, wd 0.01, b1 0.9, b2 0.999, eps 1e-8, f(x) = (x - 3)^2, x0 = 1, g = 2 (x - 3):
 * step 1: g = -4; x <- 1 * (1 - 0.001) = 0.999; m = -0.4; v = 0.016;
 *         m^ = -0.4 / 0.1 = -4; v^ = 0.016 / 0.001 = 16; x <- 0.999 + 0.1 * 4 / 4 = 1.099
 * step 2: g = 2 (1.099 - 3) = -3.802; x <- 1.099 * 0.999 = 1.097901;
 *         m = 0.9 (-0.4) + 0.1 (-3.802) = -0.7402; v = 0.999 (0.016) + 0.001 (14.455204)
 *         = 0.030439204; m^ = -0.7402 / 0.19 = -3.895789; v^ = 0.030439204 / 0.001999
 *         = 15.227215, sqrt 3.902207; x <- 1.097901 + 0.1 * 0.998355 = 1.197737
 * step 3: (same arithmetic) x = 1.296088
 */
test('AdamW on a 1-D quadratic matches the hand computation', (t) => {
  const adamW = (x: tf.Variable) =>
    createAdamW([{ variable: x, decay: true }], { weightDecay: 0.01 });
  const xs = minimise(adamW, 3);
  const expected = [1.099, 1.1977366, 1.2960879];
  xs.forEach((v, i) => t.true(Math.abs(v - expected[i]) < 1e-5, `step ${i + 1}: ${v}`));
});

test('AdamW decay is decoupled: off for variables not marked decay', (t) => {
  const adamW = (x: tf.Variable) =>
    createAdamW([{ variable: x, decay: false }], { weightDecay: 0.01 });
  const xs = minimise(adamW, 1);
  // Without decay: x = 1 + 0.1 * 4 / 4 = 1.1.
  t.true(Math.abs(xs[0] - 1.1) < 1e-6);
});

/**
 * SGD, lr 0.1, momentum 0.9, wd 0.01 (coupled), x0 = 1:
 * step 1: g = -4 + 0.01 = -3.99; b = -3.99; x = 1 + 0.399 = 1.399
 * step 2: g = 2 (1.399 - 3) + 0.01399 = -3.18801; b = 0.9 (-3.99) - 3.18801 = -6.77901;
 *         x = 1.399 + 0.677901 = 2.076901
 * step 3: x = 2.869555
 */
test('SGD with momentum on a 1-D quadratic matches the hand computation', (t) => {
  const xs = minimise((x) => createSgd([{ variable: x, decay: true }], { weightDecay: 0.01 }), 3);
  const expected = [1.399, 2.076901, 2.8695548];
  xs.forEach((v, i) => t.true(Math.abs(v - expected[i]) < 1e-5, `step ${i + 1}: ${v}`));
});

test('optimisers converge on the quadratic and keep no tensors after dispose', (t) => {
  const before = tf.memory().numTensors;
  const adam = minimise((x) => createAdamW([{ variable: x, decay: false }]), 300);
  t.true(Math.abs(adam[299] - 3) < 0.05, `${adam[299]}`);
  t.is(tf.memory().numTensors, before);
});

test('cosine annealing and step decay', (t) => {
  t.is(cosineAnnealing(1, 0, 100), 1);
  t.true(Math.abs(cosineAnnealing(1, 50, 100) - 0.5) < 1e-12);
  t.true(Math.abs(cosineAnnealing(1, 100, 100)) < 1e-12);
  t.true(Math.abs(cosineAnnealing(1, 200, 100, 0.1) - 0.1) < 1e-12);
  t.is(stepDecay(0.1, 39, [40, 80]), 0.1);
  t.true(Math.abs(stepDecay(0.1, 40, [40, 80]) - 0.01) < 1e-12);
  t.true(Math.abs(stepDecay(0.1, 99, [40, 80]) - 0.001) < 1e-12);
});
