/**
 * The gated fusion exported to ONNX and run on onnxruntime (CPU): it must give the TypeScript
 * forward pass's vectors, batched or not, and refuse an ONNX file that belongs to another
 * model.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import test from 'ava';

import { isReidbError } from '../../src/errors.ts';
import {
  buildFusionInput,
  forwardGatedFusion,
  initGatedFusionParams,
  type GatedFusionModel,
} from '../../src/features/gated-fusion.ts';
import type {
  FusionModelHeader,
  GatedFusionParams,
} from '../../src/features/gated-fusion-types.ts';
import { createOnnxFusion, exportFusionToOnnx } from '../../src/features/onnx-fusion.ts';
import { noise, untrainedSummary } from '../helpers/fusion.ts';

/** Parameters with non-zero biases, so a dropped Add would show. */
function params(appearanceDim: number, seed: number): GatedFusionParams {
  const p = initGatedFusionParams(appearanceDim, 126, seed);
  for (const [k, layer] of [p.gate, p.fc1, p.fc2, p.fc3].entries()) {
    layer.bias.set(noise(layer.outputs, seed * 10 + k).map((v) => 0.2 * v + (k === 0 ? 1 : 0)));
  }
  return p;
}

function model(p: GatedFusionParams, id: string): GatedFusionModel {
  const header: FusionModelHeader = {
    format: 'reidb-gated-fusion',
    version: 1,
    id,
    embedderId: 'test',
    alignMode: 'mesh',
    appearanceDim: p.appearanceDim,
    geometryDim: p.geometryDim,
    inputDim: p.appearanceDim + p.geometryDim,
    outputDim: p.fc3.outputs,
    weightsSha256: '0'.repeat(64),
    createdAt: '2025-01-01T00:00:00Z',
    ...untrainedSummary(),
  };
  return { header, params: p };
}

/** Inputs x of faces with geometry within about 2 std of the mean. */
function inputs(p: GatedFusionParams, count: number, seed: number): Float32Array[] {
  return Array.from({ length: count }, (_, k) => {
    const appearance = noise(p.appearanceDim, seed + k);
    const z = noise(p.geometryDim, seed + k + 5000);
    const geometry = p.geometryMean.map((m, j) => m + 2 * z[j] * p.geometryStd[j]);
    return buildFusionInput(p, appearance, geometry);
  });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function codeOf(error: unknown): string | undefined {
  return isReidbError(error) ? error.code : undefined;
}

let dir = '';
let arcParams: GatedFusionParams;
let dlibParams: GatedFusionParams;
let arcFile = '';
let dlibFile = '';

test.before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'reidb-onnx-fusion-'));
  arcParams = params(512, 1);
  dlibParams = params(128, 2);
  arcFile = path.join(dir, 'arc.onnx');
  dlibFile = path.join(dir, 'dlib.onnx');
  exportFusionToOnnx(arcParams, arcFile, { fusionId: 'gated-v1:arc000000000' });
  exportFusionToOnnx(dlibParams, dlibFile);
});

test.after.always(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('ONNX agrees with the TypeScript pass on 20 inputs, batched and one by one', async (t) => {
  for (const [p, file] of [
    [arcParams, arcFile],
    [dlibParams, dlibFile],
  ] as const) {
    const fusion = await createOnnxFusion(model(p, 'gated-v1:abc'), file, {
      executionProviders: ['cpu'],
      maxBatch: 8, // 20 inputs run as 8 + 8 + 4
    });
    try {
      t.is(fusion.id, 'gated-v1:abc');
      t.is(fusion.dim, 128);

      const xs = inputs(p, 20, 100);
      const batched = await fusion.fuseBatch(xs);
      t.is(batched.length, 20);
      let worst = 0;
      for (const [k, x] of xs.entries()) {
        const want = forwardGatedFusion(p, x);
        const [single] = await fusion.fuseBatch([x]);
        worst = Math.max(worst, maxAbsDiff(batched[k], want), maxAbsDiff(single, want));
        t.true(Math.abs(Math.hypot(...batched[k]) - 1) < 1e-5);
      }
      t.log(`D = ${p.appearanceDim + 126}: max |ONNX - TypeScript| = ${worst.toExponential(2)}`);
      t.true(worst < 1e-5, `${worst}`);
      t.deepEqual(await fusion.fuseBatch([]), []);
    } finally {
      await fusion.close();
    }
  }
});

test('sync fuse runs the TypeScript pass on the same weights', async (t) => {
  const fusion = await createOnnxFusion(model(dlibParams, 'gated-v1:d'), dlibFile);
  try {
    const appearance = noise(128, 7);
    const geometry = dlibParams.geometryMean;
    const x = buildFusionInput(dlibParams, appearance, geometry);
    t.deepEqual(fusion.fuse(appearance, geometry), forwardGatedFusion(dlibParams, x));
    const [onnx] = await fusion.fuseBatch([x]);
    t.true(maxAbsDiff(onnx, fusion.fuse(appearance, geometry)) < 1e-5);
  } finally {
    await fusion.close();
  }
  t.is(codeOf(await t.throwsAsync(fusion.fuseBatch([]))), 'invalid_argument');
});

test('a wrong-length or non-finite input is invalid_argument', async (t) => {
  const fusion = await createOnnxFusion(model(dlibParams, 'gated-v1:d'), dlibFile);
  try {
    const short = await t.throwsAsync(fusion.fuseBatch([new Float32Array(638)]));
    t.is(codeOf(short), 'invalid_argument');
    const nan = new Float32Array(254).fill(Number.NaN);
    t.is(codeOf(await t.throwsAsync(fusion.fuseBatch([nan]))), 'invalid_argument');
  } finally {
    await fusion.close();
  }
});

test('an ONNX file of another input width is model_mismatch naming the file', async (t) => {
  const error = await t.throwsAsync(createOnnxFusion(model(arcParams, 'gated-v1:a'), dlibFile));
  t.is(codeOf(error), 'model_mismatch');
  t.true(error!.message.includes(dlibFile));
  t.regex(error!.message, /638/);
  t.log(error!.message);
});

test('an ONNX file of the same width but other weights is model_mismatch', async (t) => {
  const other = params(128, 3);
  const error = await t.throwsAsync(createOnnxFusion(model(other, 'gated-v1:o'), dlibFile));
  t.is(codeOf(error), 'model_mismatch');
  t.regex(error!.message, /other weights/);
});

test('missing, damaged and provider errors have their codes', async (t) => {
  const m = model(dlibParams, 'gated-v1:d');
  const missing = await t.throwsAsync(createOnnxFusion(m, path.join(dir, 'absent.onnx')));
  t.is(codeOf(missing), 'model_missing');

  const junk = path.join(dir, 'junk.onnx');
  writeFileSync(junk, 'not an onnx model');
  t.is(codeOf(await t.throwsAsync(createOnnxFusion(m, junk))), 'model_corrupt');

  const provider = await t.throwsAsync(
    createOnnxFusion(m, dlibFile, { executionProviders: ['nosuch'] }),
  );
  t.is(codeOf(provider), 'invalid_argument');
  t.regex(provider!.message, /nosuch/);
});
