/**
 * The gated fusion's shapes, forward pass and Fusion wrapper, on seeded random weights and on
 * a 2-D network small enough to compute by hand.
 */
import test from 'ava';

import { isReidbError } from '../../src/errors.ts';
import { referenceGeometryStats } from '../../src/features/fusion.ts';
import {
  buildFusionInput,
  createGatedFusion,
  forwardGatedFusion,
  gatedFusionParamsProblem,
  gatedFusionShapes,
  gateWeights,
  initGatedFusionParams,
  meanGate,
  type GatedFusionModel,
} from '../../src/features/gated-fusion.ts';
import type {
  FusionModelHeader,
  GatedFusionParams,
} from '../../src/features/gated-fusion-types.ts';
import { noise, untrainedSummary } from '../helpers/fusion.ts';

/** A plausible face: random appearance, geometry near the model's mean. */
function face(params: GatedFusionParams, seed: number) {
  const appearance = noise(params.appearanceDim, seed);
  const z = noise(params.geometryDim, seed + 1000);
  const geometry = Float32Array.from(
    params.geometryMean,
    (m, j) => m + 2 * z[j] * params.geometryStd[j],
  );
  return { appearance, geometry };
}

function header(params: GatedFusionParams, id = 'gated-v1:test00000000'): FusionModelHeader {
  return {
    format: 'reidb-gated-fusion',
    version: 1,
    id,
    embedderId: 'dlib-resnet-v1',
    alignMode: 'mesh',
    appearanceDim: params.appearanceDim,
    geometryDim: params.geometryDim,
    inputDim: params.appearanceDim + params.geometryDim,
    outputDim: params.fc3.outputs,
    weightsSha256: '0'.repeat(64),
    createdAt: '2025-01-01T00:00:00Z',
    ...untrainedSummary(),
  };
}

function codeOf(error: unknown): string | undefined {
  return isReidbError(error) ? error.code : undefined;
}

const norm = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));

test('ArcFace width (638): METHOD.md parameter counts', (t) => {
  const shapes = gatedFusionShapes(512, 126);
  t.is(shapes.inputDim, 638);
  t.is(shapes.outputDim, 128);
  t.deepEqual(shapes.layers.gate, { inputs: 638, outputs: 638, activation: 'sigmoid' });
  t.deepEqual(shapes.layers.fc1, { inputs: 638, outputs: 512, activation: 'relu' });
  t.deepEqual(shapes.layers.fc2, { inputs: 512, outputs: 256, activation: 'relu' });
  t.deepEqual(shapes.layers.fc3, { inputs: 256, outputs: 128, activation: 'linear' });
  t.deepEqual(shapes.parameterCounts, {
    gate: 407_682,
    fc1: 327_168,
    fc2: 131_328,
    fc3: 32_896,
    total: 899_074,
  });
});

test('dlib width (254): shapes and counts', (t) => {
  const shapes = gatedFusionShapes(128, 126);
  t.is(shapes.inputDim, 254);
  t.deepEqual(shapes.layers.gate, { inputs: 254, outputs: 254, activation: 'sigmoid' });
  t.deepEqual(shapes.layers.fc1, { inputs: 254, outputs: 512, activation: 'relu' });
  t.deepEqual(shapes.parameterCounts, {
    gate: 254 * 254 + 254,
    fc1: 254 * 512 + 512,
    fc2: 131_328,
    fc3: 32_896,
    total: 64_770 + 130_560 + 131_328 + 32_896,
  });
});

test('bad dims are invalid_argument', (t) => {
  t.is(codeOf(t.throws(() => gatedFusionShapes(0, 126))), 'invalid_argument');
  t.is(codeOf(t.throws(() => gatedFusionShapes(128, 1.5))), 'invalid_argument');
  const sizes = { hidden1: 4, hidden2: -1, output: 2 };
  t.is(codeOf(t.throws(() => gatedFusionShapes(1, 1, sizes))), 'invalid_argument');
});

test('init: seeded, Glorot-bounded, zero FC biases, gate bias 2, reference stats', (t) => {
  const a = initGatedFusionParams(128, 126, 7);
  const b = initGatedFusionParams(128, 126, 7);
  const c = initGatedFusionParams(128, 126, 8);
  t.deepEqual(a.fc1.weight, b.fc1.weight);
  t.notDeepEqual(a.fc1.weight, c.fc1.weight);
  t.is(gatedFusionParamsProblem(a, true), undefined);

  const limit = Math.sqrt(6 / (254 + 512));
  const largest = a.fc1.weight.reduce((m, w) => Math.max(m, Math.abs(w)), 0);
  t.true(largest <= limit && largest > 0.95 * limit);
  t.true(a.fc1.bias.every((v) => v === 0) && a.fc3.bias.every((v) => v === 0));
  t.true(a.gate.bias.every((v) => v === 2));
  t.deepEqual(a.geometryMean, referenceGeometryStats().mean);

  const closed = initGatedFusionParams(1, 3, 1, undefined, { gateBias: 0 });
  t.true(closed.gate.bias.every((v) => v === 0));
  t.deepEqual(closed.geometryStd, Float32Array.of(1, 1, 1));
  t.is(codeOf(t.throws(() => initGatedFusionParams(128, 126, -1))), 'invalid_argument');
});

test('buildFusionInput: unit appearance, z-scored geometry', (t) => {
  const params = initGatedFusionParams(2, 3, 1, {
    mean: Float32Array.of(1, 2, 3),
    std: Float32Array.of(0.5, 2, 0),
  });
  const x = buildFusionInput(params, Float32Array.of(3, 4), Float32Array.of(2, 2, 3.5));
  // std 0 is floored at 1e-6, so (3.5 - 3) / 1e-6 = 5e5.
  const want = [0.6, 0.8, 2, 0, 5e5];
  for (let i = 0; i < want.length; i++) t.true(Math.abs(x[i] - want[i]) < 1e-6 * (1 + want[i]));

  const bad = (a: Float32Array, g: Float32Array) =>
    codeOf(t.throws(() => buildFusionInput(params, a, g)));
  t.is(bad(Float32Array.of(0, 0), Float32Array.of(1, 2, 3)), 'invalid_argument');
  t.is(bad(Float32Array.of(1), Float32Array.of(1, 2, 3)), 'invalid_argument');
  t.is(bad(Float32Array.of(1, 0), Float32Array.of(1, NaN, 3)), 'invalid_argument');
});

/**
 * D = 2 (one appearance, one geometric feature), widths 2, 2, 2, with weights chosen so that
 * every matrix read the wrong way round (transposed) gives another answer:
 *   x  = [3 / 3, (5 - 4) / 2] = [1, 0.5]
 *   s  = sigmoid(x Wg + bg), Wg = [[0, 1], [0, 0]], bg = [0, ln 3 - 1] -> sigmoid([0, ln 3])
 *      = [0.5, 0.75];  u = [0.5, 0.375]
 *   h1 = relu(u I + [0, -1]) = [0.5, 0]
 *   h2 = relu(h1 [[2, 0], [1, 1]] + [0, 0.25]) = [1, 0.25]
 *   h  = h2 [[0, 1], [4, 0]] + [2, 0] = [3, 1]  ->  [3, 1] / sqrt(10)
 */
function tinyParams(): GatedFusionParams {
  const layer = (weight: number[], bias: number[]) => ({
    inputs: 2,
    outputs: 2,
    weight: Float32Array.from(weight),
    bias: Float32Array.from(bias),
  });
  return {
    appearanceDim: 1,
    geometryDim: 1,
    geometryMean: Float32Array.of(4),
    geometryStd: Float32Array.of(2),
    gate: layer([0, 1, 0, 0], [0, Math.log(3) - 1]),
    fc1: layer([1, 0, 0, 1], [0, -1]),
    fc2: layer([2, 0, 1, 1], [0, 0.25]),
    fc3: layer([0, 1, 4, 0], [2, 0]),
  };
}

test('a 2-D network computed by hand', (t) => {
  const params = tinyParams();
  t.is(gatedFusionParamsProblem(params, true), undefined);
  const x = buildFusionInput(params, Float32Array.of(3), Float32Array.of(5));
  t.deepEqual(x, Float32Array.of(1, 0.5));

  const gate = gateWeights(params, x);
  t.true(Math.abs(gate[0] - 0.5) < 1e-7 && Math.abs(gate[1] - 0.75) < 1e-7, `${gate}`);

  const h = forwardGatedFusion(params, x);
  t.is(h.length, 2);
  t.true(Math.abs(h[0] - 3 / Math.sqrt(10)) < 1e-7, `${h}`);
  t.true(Math.abs(h[1] - 1 / Math.sqrt(10)) < 1e-7, `${h}`);
});

test('forward: unit length, deterministic, gate strictly inside (0, 1)', (t) => {
  const params = initGatedFusionParams(128, 126, 3);
  // Non-zero biases, so a dropped bias add would show.
  for (const layer of [params.fc1, params.fc2, params.fc3]) layer.bias.set(noise(layer.outputs, 9));

  const outputs: Float32Array[] = [];
  for (let k = 0; k < 5; k++) {
    const { appearance, geometry } = face(params, k + 1);
    const x = buildFusionInput(params, appearance, geometry);
    const h = forwardGatedFusion(params, x);
    t.is(h.length, 128);
    t.true(Math.abs(norm(h) - 1) < 1e-6);
    t.deepEqual(forwardGatedFusion(params, x), h);
    outputs.push(h);

    const g = gateWeights(params, x);
    t.is(g.length, 254);
    t.true(g.every((v) => v > 0 && v < 1));
  }
  t.notDeepEqual(outputs[0], outputs[1]);

  const xs = [1, 2, 3].map((k) => {
    const { appearance, geometry } = face(params, k);
    return buildFusionInput(params, appearance, geometry);
  });
  const mean = meanGate(params, xs);
  t.true(mean.appearance > 0.5 && mean.appearance < 1, `${mean.appearance}`);
  t.true(mean.geometry > 0.5 && mean.geometry < 1, `${mean.geometry}`);
});

test('forward: a wrong-length or non-finite x is invalid_argument', (t) => {
  const params = tinyParams();
  t.is(codeOf(t.throws(() => forwardGatedFusion(params, Float32Array.of(1)))), 'invalid_argument');
  const nan = Float32Array.of(1, NaN);
  t.is(codeOf(t.throws(() => forwardGatedFusion(params, nan))), 'invalid_argument');
});

test('forward: broken parameter shapes are invalid_argument, not NaN', (t) => {
  const params = tinyParams();
  const broken = { ...params, fc2: { ...params.fc2, weight: new Float32Array(3) } };
  const error = t.throws(() => forwardGatedFusion(broken, Float32Array.of(1, 0.5)));
  t.is(codeOf(error), 'invalid_argument');
  t.regex(error!.message, /fc2\.weight/);
});

test('createGatedFusion: id and dim from the model, fuse = forward(buildFusionInput)', (t) => {
  const params = initGatedFusionParams(128, 126, 5);
  const model: GatedFusionModel = { header: header(params), params };
  const fusion = createGatedFusion(model);
  t.is(fusion.id, 'gated-v1:test00000000');
  t.is(fusion.dim, 128);

  const { appearance, geometry } = face(params, 4);
  const fused = fusion.fuse(appearance, geometry);
  t.deepEqual(fused, forwardGatedFusion(params, buildFusionInput(params, appearance, geometry)));

  // Scale of the appearance embedding does not matter; its direction does.
  const scaled = fusion.fuse(
    appearance.map((v) => v * 7),
    geometry,
  );
  t.true(scaled.every((v, i) => Math.abs(v - fused[i]) < 1e-6));
  t.is(codeOf(t.throws(() => fusion.fuse(new Float32Array(512), geometry))), 'invalid_argument');
});

test('createGatedFusion: a header that disagrees with the weights is refused', (t) => {
  const params = initGatedFusionParams(128, 126, 5);
  const wrong = { ...header(params), appearanceDim: 512 };
  const error = t.throws(() => createGatedFusion({ header: wrong, params }));
  t.is(codeOf(error), 'invalid_argument');
  t.regex(error!.message, /appearanceDim 512/);

  const poisoned = initGatedFusionParams(128, 126, 5);
  poisoned.fc2.weight[10] = Number.POSITIVE_INFINITY;
  const poison = t.throws(() => createGatedFusion({ header: header(poisoned), params: poisoned }));
  t.is(codeOf(poison), 'invalid_argument');
  t.regex(poison!.message, /fc2\.weight\[10\]/);
});

test('speed: one face through the 254-D and 638-D networks', (t) => {
  for (const appearanceDim of [128, 512]) {
    const params = initGatedFusionParams(appearanceDim, 126, 11);
    const xs = Array.from({ length: 100 }, (_, k) => {
      const { appearance, geometry } = face(params, k + 1);
      return buildFusionInput(params, appearance, geometry);
    });
    for (const x of xs) forwardGatedFusion(params, x); // warm-up, so the JIT has optimised

    // The best of three rounds: the machine is shared, and the other rounds measure the others.
    let ms = Number.POSITIVE_INFINITY;
    for (let round = 0; round < 3; round++) {
      const start = process.hrtime.bigint();
      for (const x of xs) forwardGatedFusion(params, x);
      ms = Math.min(ms, Number(process.hrtime.bigint() - start) / 1e6 / xs.length);
    }
    t.log(`D = ${appearanceDim + 126}: ${ms.toFixed(3)} ms per face`);
    t.true(ms < 50); // only a guard against a gross regression on a shared machine
  }
});
