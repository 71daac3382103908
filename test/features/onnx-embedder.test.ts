/**
 * The ONNX ArcFace embedder on tiny models generated here at run time (no real ArcFace file is
 * available). The test graph is ReduceMean over the width -> Flatten -> MatMul -> Add, so its
 * output depends on the channel order, on rows versus columns and on the exact pixel scaling;
 * the expected embeddings are computed in this file from the same weights.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import test from 'ava';

import { isReidbError } from '../../src/errors.ts';
import { createEmbedder } from '../../src/features/appearance.ts';
import type { RgbImage } from '../../src/types.ts';

// ---- a minimal ONNX (protobuf) writer: just the fields these graphs need ----

type Bytes = Buffer;

function varint(value: number): Bytes {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(value));
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return Buffer.from(out);
}

/** Field with wire type 0 (varint). */
const int = (field: number, value: number): Bytes =>
  Buffer.concat([varint(field << 3), varint(value)]);

/** Field with wire type 2 (length-delimited): bytes, strings and sub-messages. */
const bytes = (field: number, value: Bytes | string): Bytes => {
  const body = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  return Buffer.concat([varint((field << 3) | 2), varint(body.length), body]);
};

const msg = (...parts: Bytes[]): Bytes => Buffer.concat(parts);

const FLOAT = 1; // TensorProto.DataType.FLOAT
const ATTR_INT = 2; // AttributeProto.AttributeType
const ATTR_INTS = 7;

/** ValueInfoProto of a float tensor; a string dimension is symbolic (dim_param). */
function tensorInfo(name: string, shape: (number | string)[]): Bytes {
  const dims = shape.map((d) => bytes(1, typeof d === 'number' ? int(1, d) : bytes(2, d)));
  const tensorType = msg(int(1, FLOAT), bytes(2, msg(...dims)));
  return msg(bytes(1, name), bytes(2, bytes(1, tensorType)));
}

/** TensorProto initializer with float data in raw_data (little-endian). */
function initializer(name: string, shape: number[], values: Float32Array): Bytes {
  const raw = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  return msg(...shape.map((d) => int(1, d)), int(2, FLOAT), bytes(8, name), bytes(9, raw));
}

function attrInt(name: string, value: number): Bytes {
  return msg(bytes(1, name), int(3, value), int(20, ATTR_INT));
}

function attrInts(name: string, values: number[]): Bytes {
  return msg(bytes(1, name), ...values.map((v) => int(8, v)), int(20, ATTR_INTS));
}

function node(op: string, inputs: string[], outputs: string[], attributes: Bytes[] = []): Bytes {
  return msg(
    ...inputs.map((i) => bytes(1, i)),
    ...outputs.map((o) => bytes(2, o)),
    bytes(3, `${op}_${outputs[0]}`),
    bytes(4, op),
    ...attributes.map((a) => bytes(5, a)),
  );
}

/** Deterministic weights in [-1, 1) (a linear congruential generator). */
function weights(count: number, seed: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

interface TestModel {
  file: string;
  size: number;
  dim: number;
  /** [3 * size, dim], row-major. */
  w: Float32Array;
  b: Float32Array;
}

/**
 * Writes an opset-13 model: input 'input.1' float [batch, 3, size, size] -> ReduceMean over
 * the width (keepdims 0) -> [batch, 3, size] -> Flatten -> MatMul W [3 * size, dim] -> Add b.
 */
function writeModel(
  dir: string,
  name: string,
  size: number,
  dim: number,
  batch: number | string,
): TestModel {
  const w = weights(3 * size * dim, 7);
  const reduceWidth = [attrInts('axes', [3]), attrInt('keepdims', 0)];
  const b = weights(dim, 11);
  const graph = msg(
    bytes(1, node('ReduceMean', ['input.1'], ['rows'], reduceWidth)),
    bytes(1, node('Flatten', ['rows'], ['flat'], [attrInt('axis', 1)])),
    bytes(1, node('MatMul', ['flat', 'W'], ['projected'])),
    bytes(1, node('Add', ['projected', 'B'], ['embedding'])),
    bytes(2, 'tiny_arcface'),
    bytes(5, initializer('W', [3 * size, dim], w)),
    bytes(5, initializer('B', [dim], b)),
    bytes(11, tensorInfo('input.1', [batch, 3, size, size])),
    bytes(12, tensorInfo('embedding', [batch, dim])),
  );
  const model = msg(
    int(1, 7), // ir_version 7 (opset 13 era)
    bytes(2, 'reidb-test'),
    bytes(7, graph),
    bytes(8, msg(bytes(1, ''), int(2, 13))), // opset_import: default domain, version 13
  );

  const file = path.join(dir, name);
  writeFileSync(file, model);
  return { file, size, dim, w, b };
}

/**
 * The model's L2-normalised output for one crop, computed in double precision, with pixels
 * fed as (p - 127.5) / scale.
 */
function expected(model: TestModel, crop: RgbImage, scale = 127.5): Float64Array {
  const { size, dim, w, b } = model;
  const rows = new Float64Array(3 * size);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      let sum = 0;
      for (let x = 0; x < size; x++) sum += (crop.data[3 * (y * size + x) + c] - 127.5) / scale;
      rows[c * size + y] = sum / size;
    }
  }

  const out = new Float64Array(dim);
  for (let k = 0; k < dim; k++) {
    let v = b[k];
    for (let i = 0; i < 3 * size; i++) v += rows[i] * w[i * dim + k];
    out[k] = v;
  }
  const norm = Math.hypot(...out);
  return out.map((v) => v / norm);
}

/** A crop whose channels differ and whose rows differ from its columns. */
function crop(size: number, seed: number): RgbImage {
  const data = new Uint8Array(size * size * 3);
  const noise = weights(size * size, seed);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = 3 * (y * size + x);
      data[p] = (40 + 2 * y + seed * 13) % 256;
      data[p + 1] = (x * 3 + y) % 256;
      data[p + 2] = Math.floor(128 + 127 * noise[y * size + x]);
    }
  }
  return { data, width: size, height: size, channels: 3 };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

// ---- tests ----

let dir = '';
let dynamic: TestModel;
let batchOfOne: TestModel;
let wrongSize: TestModel;

test.before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'reidb-onnx-'));
  dynamic = writeModel(dir, 'tiny-arcface.onnx', 112, 512, 'N');
  batchOfOne = writeModel(dir, 'tiny-arcface-b1.onnx', 112, 512, 1);
  wrongSize = writeModel(dir, 'tiny-64.onnx', 64, 512, 'N');
});

test.after.always(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('loads a generated ArcFace-layout model: id, dim 512, 112-pixel crops', async (t) => {
  const embedder = await createEmbedder({ kind: 'onnx-arcface', modelPath: dynamic.file });
  try {
    t.regex(embedder.id, /^onnx:[0-9a-f]{16}$/);
    t.is(embedder.dim, 512);
    t.is(embedder.inputSize, 112);
  } finally {
    await embedder.close();
  }
});

test('feeds (p - 127.5) / 127.5 in RGB NCHW order; unit length; batched', async (t) => {
  const embedder = await createEmbedder({
    kind: 'onnx-arcface',
    modelPath: dynamic.file,
    executionProviders: ['cpu'],
  });
  try {
    const crops = [crop(112, 1), crop(112, 2), crop(112, 3)];
    const batched = await embedder.embed(crops);
    t.is(batched.length, 3);

    for (const [i, c] of crops.entries()) {
      const [single] = await embedder.embed([c]);
      const want = expected(dynamic, c);
      t.true(Math.abs(Math.hypot(...batched[i]) - 1) < 1e-5);
      t.true(maxAbsDiff(batched[i], want) < 1e-6, `crop ${i}: ${maxAbsDiff(batched[i], want)}`);
      t.true(maxAbsDiff(single, batched[i]) < 1e-6);
    }

    // The same pixels read as BGR, or scaled by 1/128, would be well outside that tolerance
    // (measured: about 1e-7 for the right scaling, 6e-5 for 1/128).
    const bgr = { ...crops[0], data: crops[0].data.slice() };
    for (let p = 0; p < bgr.data.length; p += 3) {
      [bgr.data[p], bgr.data[p + 2]] = [crops[0].data[p + 2], crops[0].data[p]];
    }
    t.true(maxAbsDiff(expected(dynamic, bgr), batched[0]) > 1e-3);
    t.true(maxAbsDiff(expected(dynamic, crops[0], 128), batched[0]) > 1e-5);
    t.deepEqual(await embedder.embed([]), []);
  } finally {
    await embedder.close();
  }
});

test('a model with a fixed batch of 1 still embeds several crops', async (t) => {
  const embedder = await createEmbedder({ kind: 'onnx-arcface', modelPath: batchOfOne.file });
  try {
    const crops = [crop(112, 4), crop(112, 5)];
    const out = await embedder.embed(crops);
    t.is(out.length, 2);
    for (const [i, c] of crops.entries()) {
      t.true(maxAbsDiff(out[i], expected(batchOfOne, c)) < 1e-6);
    }
  } finally {
    await embedder.close();
  }
});

test('a crop that is not 112 x 112 x 3 is invalid_argument', async (t) => {
  const embedder = await createEmbedder({ kind: 'onnx-arcface', modelPath: dynamic.file });
  try {
    const error = await t.throwsAsync(embedder.embed([crop(150, 1)]));
    t.true(isReidbError(error));
    t.is((error as { code?: string }).code, 'invalid_argument');
  } finally {
    await embedder.close();
  }
});

test('a model whose input is 3x64x64 is model_mismatch naming the file', async (t) => {
  const error = await t.throwsAsync(
    createEmbedder({ kind: 'onnx-arcface', modelPath: wrongSize.file }),
  );
  t.true(isReidbError(error));
  t.is((error as { code?: string }).code, 'model_mismatch');
  t.log(error!.message);
  t.true(error!.message.includes(wrongSize.file));
  t.regex(error!.message, /3,64,64/);
});

test('a text file is model_corrupt naming the file', async (t) => {
  const file = path.join(dir, 'not-a-model.onnx');
  writeFileSync(file, 'this is not an ONNX model\n');
  const error = await t.throwsAsync(createEmbedder({ kind: 'onnx-arcface', modelPath: file }));
  t.true(isReidbError(error));
  t.is((error as { code?: string }).code, 'model_corrupt');
  t.log(error!.message);
  t.true(error!.message.includes(file));
});

test('a missing file, or no modelPath at all, is model_missing', async (t) => {
  const file = path.join(dir, 'absent.onnx');
  const missing = await t.throwsAsync(createEmbedder({ kind: 'onnx-arcface', modelPath: file }));
  t.is((missing as { code?: string }).code, 'model_missing');
  t.true(missing!.message.includes(file));

  const none = await t.throwsAsync(createEmbedder({ kind: 'onnx-arcface' }));
  t.is((none as { code?: string }).code, 'model_missing');
  t.regex(none!.message, /modelPath/);
});

test('an unknown execution provider is invalid_argument, not a silent CPU run', async (t) => {
  const error = await t.throwsAsync(
    createEmbedder({
      kind: 'onnx-arcface',
      modelPath: dynamic.file,
      executionProviders: ['nosuch'],
    }),
  );
  t.is((error as { code?: string }).code, 'invalid_argument');
  t.regex(error!.message, /nosuch/);
});
