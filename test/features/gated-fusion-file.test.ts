/**
 * The gated fusion's model file: round trip, and each way a file can be missing, damaged or
 * made for another embedder, with the error code it must give.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import test from 'ava';

import { isReidbError } from '../../src/errors.ts';
import {
  readFusionModel,
  writeFusionModel,
  type FusionModelHeaderInput,
} from '../../src/features/fusion-model-file.ts';
import { createGatedFusion, initGatedFusionParams } from '../../src/features/gated-fusion.ts';
import type { GatedFusionParams } from '../../src/features/gated-fusion-types.ts';

const HEADER: FusionModelHeaderInput = {
  embedderId: 'dlib-resnet-v1',
  alignMode: 'mesh',
  createdAt: '2025-01-02T03:04:05.000Z',
  training: {
    data: ['celeba_wild'],
    trainIdentities: 50,
    valIdentities: 10,
    trainFaces: 400,
    valFaces: 79,
    epochs: 3,
    loss: { triplet: 0.7, ce: 0.3 },
    optimiser: 'adamw',
    seed: 42,
  },
  metrics: { valMAP: 0.5, valRank1: 0.75, valAUC: 0.9 },
};

/** dlib-width parameters with non-zero biases everywhere. */
function params(seed = 1): GatedFusionParams {
  const p = initGatedFusionParams(128, 126, seed);
  for (const layer of [p.gate, p.fc1, p.fc2, p.fc3]) {
    layer.bias.forEach((_, i) => (layer.bias[i] = Math.sin(i + seed)));
  }
  return p;
}

let dir = '';
let good = '';
let goodParams: GatedFusionParams;

test.before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'reidb-fusion-file-'));
  good = path.join(dir, 'good.reidbfus');
  goodParams = params();
  writeFusionModel(good, HEADER, goodParams);
});

test.after.always(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The good file split into its header object and weight bytes. */
function parts(): { header: Record<string, unknown>; weights: Buffer } {
  const bytes = readFileSync(good);
  const length = bytes.readUInt32LE(8);
  const header = JSON.parse(bytes.subarray(12, 12 + length).toString('utf8'));
  return { header, weights: bytes.subarray(12 + length) };
}

/** Writes a file from a header object and weight bytes; returns its path. */
function assemble(name: string, header: unknown, weights: Buffer): string {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const preamble = Buffer.alloc(12);
  preamble.write('REIDBFUS', 0, 'ascii');
  preamble.writeUInt32LE(json.length, 8);
  const file = path.join(dir, name);
  writeFileSync(file, Buffer.concat([preamble, json, weights]));
  return file;
}

/** The error readFusionModel throws, with its code checked and the file named. */
function readError(t: import('ava').ExecutionContext, file: string, code: string, expect = {}) {
  const error = t.throws(() => readFusionModel(file, expect));
  t.true(isReidbError(error), String(error));
  t.is((error as { code?: string }).code, code, error!.message);
  t.true(error!.message.includes(file), error!.message);
  return error!;
}

test('round trip: header filled in, weights bit-identical, same fused vectors', (t) => {
  const model = readFusionModel(good, { embedderId: 'dlib-resnet-v1', appearanceDim: 128 });
  const { header } = model;
  t.is(header.format, 'reidb-gated-fusion');
  t.is(header.version, 1);
  t.regex(header.id, /^gated-v1:[0-9a-f]{12}$/);
  t.is(header.id, `gated-v1:${header.weightsSha256.slice(0, 12)}`);
  t.is(header.appearanceDim, 128);
  t.is(header.geometryDim, 126);
  t.is(header.inputDim, 254);
  t.is(header.outputDim, 128);
  t.deepEqual(header.training, HEADER.training);
  t.deepEqual(header.metrics, HEADER.metrics);
  t.deepEqual(model.params, goodParams);

  const size = readFileSync(good).length;
  const floats = 2 * 126 + 64_770 + 130_560 + 131_328 + 32_896;
  t.is(size, 12 + readFileSync(good).readUInt32LE(8) + 4 * floats);
  t.is(header.weightsSha256, createHash('sha256').update(parts().weights).digest('hex'));

  const a = Float32Array.from({ length: 128 }, (_, i) => Math.cos(i));
  const g = goodParams.geometryMean;
  const fromMemory = createGatedFusion({ header, params: goodParams }).fuse(a, g);
  t.deepEqual(createGatedFusion(model).fuse(a, g), fromMemory);
  t.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.partial')),
    [],
  );
});

test('the writer returns the header it wrote; other weights give another id', (t) => {
  const file = path.join(dir, 'other.reidbfus');
  const written = writeFusionModel(file, HEADER, params(2));
  t.deepEqual(readFusionModel(file).header, written);
  t.not(written.id, readFusionModel(good).header.id);
});

test('a missing file is model_missing', (t) => {
  readError(t, path.join(dir, 'absent.reidbfus'), 'model_missing');
  readError(t, dir, 'model_missing');
});

test('a wrong magic, or a file too short for one, is model_corrupt', (t) => {
  const bytes = readFileSync(good);
  const wrong = path.join(dir, 'magic.reidbfus');
  writeFileSync(wrong, Buffer.concat([Buffer.from('REIDBFUZ'), bytes.subarray(8)]));
  t.regex(readError(t, wrong, 'model_corrupt').message, /REIDBFUS/);

  const tiny = path.join(dir, 'tiny.reidbfus');
  writeFileSync(tiny, 'REIDB');
  readError(t, tiny, 'model_corrupt');
});

test('a truncated header or truncated weights are model_corrupt', (t) => {
  const bytes = readFileSync(good);
  const header = path.join(dir, 'cut-header.reidbfus');
  writeFileSync(header, bytes.subarray(0, 40));
  t.regex(readError(t, header, 'model_corrupt').message, /truncated/);

  const weights = path.join(dir, 'cut-weights.reidbfus');
  writeFileSync(weights, bytes.subarray(0, bytes.length - 4));
  t.regex(readError(t, weights, 'model_corrupt').message, /truncated/);

  const long = path.join(dir, 'long.reidbfus');
  writeFileSync(long, Buffer.concat([bytes, Buffer.alloc(4)]));
  t.regex(readError(t, long, 'model_corrupt').message, /too long/);
});

test('a header that is not JSON is model_corrupt', (t) => {
  const { weights } = parts();
  const file = path.join(dir, 'not-json.reidbfus');
  const junk = Buffer.from('{not json');
  const preamble = Buffer.alloc(12);
  preamble.write('REIDBFUS', 0, 'ascii');
  preamble.writeUInt32LE(junk.length, 8);
  writeFileSync(file, Buffer.concat([preamble, junk, weights]));
  readError(t, file, 'model_corrupt');
});

test('weights that do not match the sha256, or an id that does not, are model_corrupt', (t) => {
  const { header, weights } = parts();
  const flipped = Buffer.from(weights);
  flipped[1000] ^= 0x01;
  const file = assemble('flipped.reidbfus', header, flipped);
  t.regex(readError(t, file, 'model_corrupt').message, /sha256/);

  const renamed = assemble('renamed.reidbfus', { ...header, id: 'gated-v1:000000000000' }, weights);
  t.regex(readError(t, renamed, 'model_corrupt').message, /id/);
});

test('weight sizes that do not match the dims are model_corrupt', (t) => {
  const { header, weights } = parts();
  const arcface = { ...header, appearanceDim: 512, inputDim: 638 };
  const file = assemble('dims.reidbfus', arcface, weights);
  t.regex(readError(t, file, 'model_corrupt').message, /dims 512 \+ 126/);

  const sum = assemble('sum.reidbfus', { ...header, inputDim: 300 }, weights);
  t.regex(readError(t, sum, 'model_corrupt').message, /inputDim/);
});

test('a non-finite weight with a matching sha256 is model_corrupt', (t) => {
  const { header, weights } = parts();
  const poisoned = Buffer.from(weights);
  poisoned.writeFloatLE(Number.NaN, 4 * 300);
  const sha = createHash('sha256').update(poisoned).digest('hex');
  const fixed = { ...header, weightsSha256: sha, id: `gated-v1:${sha.slice(0, 12)}` };
  const file = assemble('nan.reidbfus', fixed, poisoned);
  t.regex(readError(t, file, 'model_corrupt').message, /NaN/);
});

test('an unknown format version is model_mismatch', (t) => {
  const { header, weights } = parts();
  const file = assemble('v2.reidbfus', { ...header, version: 2 }, weights);
  t.regex(readError(t, file, 'model_mismatch').message, /version 2/);

  const other = assemble('format.reidbfus', { ...header, format: 'something-else' }, weights);
  readError(t, other, 'model_corrupt');
});

test('a model for another embedder or width is model_mismatch naming both', (t) => {
  const embedder = readError(t, good, 'model_mismatch', { embedderId: 'onnx:0123456789abcdef' });
  t.regex(embedder.message, /dlib-resnet-v1/);
  t.regex(embedder.message, /onnx:0123456789abcdef/);

  const width = readError(t, good, 'model_mismatch', { appearanceDim: 512 });
  t.regex(width.message, /128/);
  t.regex(width.message, /512/);
});

test('the writer refuses other widths, disagreeing headers and non-finite weights', (t) => {
  const file = path.join(dir, 'refused.reidbfus');
  const code = (fn: () => unknown) => (t.throws(fn) as { code?: string }).code;

  const small = initGatedFusionParams(2, 2, 1, undefined, {
    sizes: { hidden1: 4, hidden2: 3, output: 2 },
  });
  t.is(
    code(() => writeFusionModel(file, HEADER, small)),
    'invalid_argument',
  );
  const wide = { ...HEADER, appearanceDim: 512 };
  t.is(
    code(() => writeFusionModel(file, wide, params())),
    'invalid_argument',
  );
  const anonymous = { ...HEADER, embedderId: '' };
  t.is(
    code(() => writeFusionModel(file, anonymous, params())),
    'invalid_argument',
  );

  const nan = params();
  nan.fc3.weight[5] = Number.NaN;
  t.is(
    code(() => writeFusionModel(file, HEADER, nan)),
    'invalid_argument',
  );
  t.deepEqual(
    readdirSync(dir).filter((f) => f.startsWith('refused')),
    [],
  );
});
