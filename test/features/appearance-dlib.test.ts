/**
 * The dlib ResNet embedder against face-api's own FaceRecognitionNet on the same inputs, plus
 * identity separation, batching and crop checks on real LFW photos. One embedder serves the
 * whole file (serial tests), created and closed here.
 */
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';

import test from 'ava';
import sharp from 'sharp';

import { isReidbError } from '../../src/errors.ts';
import { createEmbedder, type Embedder } from '../../src/features/appearance.ts';
import { resolveModel } from '../../src/models/registry.ts';
import { loadWeightsFromFile, tf } from '../../src/tf/runtime.ts';
import type { RgbImage } from '../../src/types.ts';
import { dataPath, hasData } from '../helpers/data.ts';

const SIZE = 150;

/**
 * A rough face crop of an LFW photo (face near the centre; the shared copy is 150 x 150, the
 * original 250 x 250): the central 68 % square resized to 150 x 150, about the framing of a
 * dlib face chip.
 */
async function lfwCrop(relative: string): Promise<RgbImage> {
  const file = dataPath('lfw_multi', relative);
  const { width = 0, height = 0 } = await sharp(file).metadata();
  const side = Math.round(0.68 * Math.min(width, height));
  const { data, info } = await sharp(file)
    .extract({
      left: Math.round((width - side) / 2),
      top: Math.round((height - side) / 2),
      width: side,
      height: side,
    })
    .resize(SIZE, SIZE)
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 };
}

/** A uniform grey square crop of `size` pixels. */
function blank(size: number, value = 0): RgbImage {
  const data = new Uint8Array(size * size * 3).fill(value);
  return { data, width: size, height: size, channels: 3 };
}

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

/** The first `count` identities of lfw_multi (sorted) with two or more photos. */
function identities(count: number): string[][] {
  const names = readdirSync(dataPath('lfw_multi'), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  const out: string[][] = [];
  for (const name of names) {
    const files = readdirSync(dataPath('lfw_multi', name))
      .filter((f) => f.endsWith('.jpg'))
      .sort();
    if (files.length >= 2) out.push(files.slice(0, 2).map((f) => `${name}/${f}`));
    if (out.length === count) break;
  }
  return out;
}

let embedder: Embedder | undefined;

test.before(async () => {
  embedder = await createEmbedder({ kind: 'dlib', backend: 'wasm' });
});

test.after.always(async () => {
  await embedder?.close();
});

test.serial('reports the dlib contract: id, 128-D, 150-pixel crops', (t) => {
  t.is(embedder!.id, 'dlib-resnet-v1');
  t.is(embedder!.dim, 128);
  t.is(embedder!.inputSize, 150);
});

test.serial('agrees with face-api FaceRecognitionNet on real face crops', async (t) => {
  if (!hasData(t)) return;
  const files = [
    'Aaron_Peirsol/Aaron_Peirsol_0001.jpg',
    'Al_Gore/Al_Gore_0001.jpg',
    'Adam_Sandler/Adam_Sandler_0001.jpg',
  ];
  const crops = await Promise.all(files.map(lfwCrop));
  const ours = await embedder!.embed(crops);

  // face-api's node-wasm build shares this process's @tensorflow/tfjs engine (and so the
  // wasm backend initialised above); its net runs on its own copy of the same weights.
  const require = createRequire(import.meta.url);
  const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
  const net = faceapi.nets.faceRecognitionNet;
  net.loadFromWeightMap(loadWeightsFromFile(resolveModel('dlib-resnet-v1').entryPath));

  try {
    for (const [i, crop] of crops.entries()) {
      const input = tf.tensor3d(crop.data, [SIZE, SIZE, 3], 'int32');
      const reference = (await net.computeFaceDescriptor(input)) as Float32Array;
      input.dispose();

      const c = cosine(ours[i], reference);
      const norm = Math.hypot(...reference);
      let maxDiff = 0;
      for (let k = 0; k < 128; k++) {
        maxDiff = Math.max(maxDiff, Math.abs(ours[i][k] - reference[k] / norm));
      }
      t.log(`${files[i]}: cosine ${c.toFixed(8)}, max |diff| ${maxDiff.toExponential(2)}`);
      t.true(c > 0.9999, `cosine ${c} for ${files[i]}`);
      t.true(maxDiff < 1e-4, `max abs diff ${maxDiff} for ${files[i]}`);
    }
  } finally {
    net.dispose();
  }
});

test.serial('same-person pairs score above different-person pairs (10 LFW people)', async (t) => {
  if (!hasData(t)) return;
  const people = identities(10);
  t.is(people.length, 10);

  const crops = await Promise.all(people.flat().map(lfwCrop));
  const vectors = await embedder!.embed(crops);

  const same: number[] = [];
  const different: number[] = [];
  for (let a = 0; a < people.length; a++) {
    same.push(cosine(vectors[2 * a], vectors[2 * a + 1]));
    for (let b = a + 1; b < people.length; b++) {
      different.push(cosine(vectors[2 * a], vectors[2 * b]));
    }
  }

  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  // Share of (same, different) pairings ordered correctly: the ROC AUC of this sample.
  let ordered = 0;
  for (const s of same) for (const d of different) ordered += s > d ? 1 : 0;
  const auc = ordered / (same.length * different.length);
  t.log(
    `mean cosine same ${mean(same).toFixed(3)} (n=${same.length}), ` +
      `different ${mean(different).toFixed(3)} (n=${different.length}), AUC ${auc.toFixed(3)}`,
  );

  // dlib embeddings crowd into a narrow cone (different people still score ~0.9 cosine; dlib's
  // own threshold is Euclidean 0.6, about cosine 0.82), so the margin asked for is small.
  t.true(mean(same) > mean(different) + 0.03);
  t.true(auc > 0.9);
});

test.serial('a batch embeds as one crop at a time does; all unit length', async (t) => {
  if (!hasData(t)) return;
  const files = identities(4).flat();
  const crops = await Promise.all(files.map(lfwCrop));

  const batched = await embedder!.embed(crops);
  t.is(batched.length, crops.length);
  for (const [i, crop] of crops.entries()) {
    const [single] = await embedder!.embed([crop]);
    t.true(cosine(batched[i], single) > 0.99999);
    t.true(Math.abs(Math.hypot(...batched[i]) - 1) < 1e-5);
  }
  t.deepEqual(await embedder!.embed([]), []);
});

test.serial('a crop that is not 150 x 150 x 3 is invalid_argument', async (t) => {
  const wrong = blank(112);
  const short: RgbImage = { ...blank(150), data: new Uint8Array(10) };
  const good = blank(150);

  for (const crops of [[wrong], [good, short]]) {
    const error = await t.throwsAsync(embedder!.embed(crops));
    t.true(isReidbError(error));
    t.is((error as { code?: string }).code, 'invalid_argument');
  }
});

test.serial('speed on the wasm backend (one thread): ms per crop at batch 1 and 8', async (t) => {
  const crop = blank(150, 128);

  // One untimed call per batch shape first, so that the timing leaves out first-run setup.
  const msPerCrop = async (batch: number, rounds: number) => {
    const crops = Array.from({ length: batch }, () => crop);
    await embedder!.embed(crops);
    const start = performance.now();
    for (let r = 0; r < rounds; r++) await embedder!.embed(crops);
    return (performance.now() - start) / (rounds * batch);
  };
  const one = await msPerCrop(1, 8);
  const eight = await msPerCrop(8, 2);
  t.log(
    `${tf.getBackend()} backend: ${one.toFixed(1)} ms/crop at batch 1, ` +
      `${eight.toFixed(1)} ms/crop at batch 8`,
  );
  t.true(one > 0 && eight > 0);
});

test.serial('no tensors leak across embed calls', async (t) => {
  const crop = blank(150);
  const before = tf.memory().numTensors;
  await embedder!.embed([crop, crop]);
  t.is(tf.memory().numTensors, before);
});

test.serial('close() releases the weights; a closed embedder refuses to embed', async (t) => {
  const other = await createEmbedder({ kind: 'dlib', backend: 'wasm' });
  const before = tf.memory().numTensors;
  await other.close();
  t.is(tf.memory().numTensors, before - 59);
  const crop = blank(150);
  await t.throwsAsync(other.embed([crop]), { message: /closed/ });
});
