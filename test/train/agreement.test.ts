import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import {
  buildFusionInput,
  forwardGatedFusion,
  initGatedFusionParams,
} from '../../src/features/gated-fusion.ts';
import { createOnnxFusion, exportFusionToOnnx } from '../../src/features/onnx-fusion.ts';
import { embedWithTrainer } from '../../src/train/train.ts';
import { mulberry32 } from '../../src/train/sampler.ts';

test('the trainer (tfjs), the served TypeScript pass and ONNX agree on the same weights', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-agree-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const random = mulberry32(11);
  const params = initGatedFusionParams(128, 126, 7);
  const inputs = Array.from({ length: 12 }, () =>
    buildFusionInput(
      params,
      Float32Array.from({ length: 128 }, () => random() - 0.5),
      Float32Array.from({ length: 126 }, (_, i) => params.geometryMean[i] + (random() - 0.5)),
    ),
  );

  const fromTf = await embedWithTrainer(params, inputs);
  const fromTs = inputs.map((x) => forwardGatedFusion(params, x));
  const file = path.join(dir, 'fusion.onnx');
  exportFusionToOnnx(params, file);
  const header = {
    format: 'reidb-gated-fusion',
    version: 1,
    id: 'gated-v1:test',
    embedderId: 'x',
    alignMode: 'mesh',
    appearanceDim: 128,
    geometryDim: 126,
    inputDim: 254,
    outputDim: 128,
    weightsSha256: '',
    createdAt: '',
    training: {} as never,
    metrics: {} as never,
  } as const;
  const onnx = await createOnnxFusion({ header, params }, file);
  t.teardown(() => onnx.close());
  const fromOnnx = await onnx.fuseBatch(inputs);

  let worst = 0;
  for (let i = 0; i < inputs.length; i++) {
    for (let d = 0; d < 128; d++) {
      worst = Math.max(
        worst,
        Math.abs(fromTf[i][d] - fromTs[i][d]),
        Math.abs(fromOnnx[i][d] - fromTs[i][d]),
      );
    }
  }
  t.log(`largest difference: ${worst.toExponential(2)}`);
  t.true(worst < 1e-5);
});
