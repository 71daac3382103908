/**
 * createEmbedder's option handling: the default kind, unknown kinds, and model files that are
 * absent, with no fall-back from one kind to another. The networks themselves are tested in
 * appearance-dlib.test.ts and onnx-embedder.test.ts.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import test from 'ava';

import { isReidbError } from '../../src/errors.ts';
import { createEmbedder, type EmbedderKind } from '../../src/features/appearance.ts';
import { resolveModel } from '../../src/models/registry.ts';

function code(error: unknown): string | undefined {
  return isReidbError(error) ? error.code : undefined;
}

test('dlib is the default kind', async (t) => {
  const embedder = await createEmbedder({ backend: 'wasm' });
  try {
    t.is(embedder.id, 'dlib-resnet-v1');
    t.is(embedder.dim, 128);
    t.is(embedder.inputSize, 150);
  } finally {
    await embedder.close();
  }
});

test('an unknown kind is invalid_argument', async (t) => {
  const error = await t.throwsAsync(createEmbedder({ kind: 'facenet' as EmbedderKind }));
  t.is(code(error), 'invalid_argument');
  t.regex(error!.message, /facenet/);
});

test('onnx-arcface without modelPath is model_missing, not a dlib embedder', async (t) => {
  const error = await t.throwsAsync(createEmbedder({ kind: 'onnx-arcface', modelPath: '' }));
  t.is(code(error), 'model_missing');
  t.regex(error!.message, /modelPath/);
});

test('dlib weights missing from modelDir are model_missing naming the file', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'reidb-dlib-'));
  try {
    const error = await t.throwsAsync(createEmbedder({ kind: 'dlib', modelDir: dir }));
    t.is(code(error), 'model_missing');
    t.true(error!.message.includes(dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('altered dlib weights in modelDir are model_corrupt naming the file', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'reidb-dlib-'));
  try {
    const { entryPath } = resolveModel('dlib-resnet-v1');
    copyFileSync(entryPath, path.join(dir, path.basename(entryPath)));
    const bin = path.join(dir, 'face_recognition_model.bin');
    writeFileSync(bin, Buffer.alloc(6444032));

    const error = await t.throwsAsync(createEmbedder({ kind: 'dlib', modelDir: dir }));
    t.is(code(error), 'model_corrupt');
    t.true(error!.message.includes(bin));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
