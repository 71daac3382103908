import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

import test from 'ava';

import { openGallery, type EnrolFace } from '../../src/gallery/gallery.ts';
import { CONFIG, randomFace, rng, tempDir } from './fixtures.ts';

/** Every file under `dir`, recursively, with its bytes. */
function readAllFiles(dir: string): { file: string; bytes: Buffer }[] {
  const out: { file: string; bytes: Buffer }[] = [];
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) out.push(...readAllFiles(file));
    else out.push({ file, bytes: readFileSync(file) });
  }
  return out;
}

/** Five 16-byte windows spread over a vector's float32 bytes (start, quarters, end). */
function windows(vector: Float32Array): Buffer[] {
  const bytes = Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
  const last = bytes.byteLength - 16;
  const starts = [0, last / 4, last / 2, (3 * last) / 4, last].map((s) => Math.floor(s / 4) * 4);
  return starts.map((start) => Buffer.from(bytes.subarray(start, start + 16)));
}

/** Names of the files holding any of the patterns. */
function filesHolding(files: { file: string; bytes: Buffer }[], patterns: Buffer[]): string[] {
  return files
    .filter(({ bytes }) => patterns.some((pattern) => bytes.includes(pattern)))
    .map(({ file }) => path.basename(file));
}

/**
 * The fused vector as hnswlib stores it in the cosine space: divided by its float32 norm, with
 * the sum of squares accumulated in float32 as hnswlib-node's normalizePoint does.
 */
function asIndexed(vector: Float32Array): Float32Array {
  let sum = 0;
  for (const value of vector) sum = Math.fround(sum + Math.fround(value * value));
  const norm = Math.fround(Math.sqrt(sum));
  return vector.map((value) => value / norm);
}

function vectorPatterns(faces: EnrolFace[]): Map<string, Buffer[]> {
  const patterns = new Map<string, Buffer[]>();
  faces.forEach((face, i) => {
    patterns.set(`face ${i} appearance`, windows(face.appearance));
    patterns.set(`face ${i} geometry`, windows(face.geometry));
    patterns.set(`face ${i} fused`, [...windows(face.fused), ...windows(asIndexed(face.fused))]);
  });
  return patterns;
}

async function eraseAndScan(
  t: import('ava').ExecutionContext,
  identities: number,
  facesEach: number,
  eraseIndices: number[],
  separateIndexDir = false,
): Promise<void> {
  // With a separate index folder, both folders live under `root` and the scan covers both.
  const root = tempDir(t);
  const dir = separateIndexDir ? path.join(root, 'db') : root;
  const indexDir = separateIndexDir ? path.join(root, 'indexes') : undefined;
  const random = rng(identities * 1000 + facesEach);
  const label = (i: number): string => `persona-${i}-Ωμέγα-${(i * 7919).toString(36)}`;
  const source = (i: number, j: number): string => `upload-${i}-${j}-q8z3.jpg`;

  const enrolled = new Map<number, EnrolFace[]>();
  const gallery = await openGallery(dir, { config: CONFIG, indexDir });
  for (let i = 0; i < identities; i++) {
    const faces = Array.from({ length: facesEach }, (_, j) => randomFace(random, source(i, j)));
    gallery.enrol(label(i), faces, { note: `metadata of ${label(i)}` });
    enrolled.set(i, faces);
  }
  gallery.flush();

  // Before erasure the scan does find the vectors, in SQLite and in index.hnsw: the test can
  // see what it looks for.
  const before = readAllFiles(root);
  for (const i of eraseIndices) {
    for (const face of enrolled.get(i)!) {
      t.true(filesHolding(before, windows(asIndexed(face.fused))).includes('index.hnsw'));
      t.true(filesHolding(before, windows(face.appearance)).length > 0);
    }
    t.true(filesHolding(before, [Buffer.from(label(i), 'utf8')]).length > 0);
  }

  for (const i of eraseIndices) {
    const result = gallery.erase(label(i));
    t.deepEqual(
      { identity: result.identity, facesRemoved: result.facesRemoved },
      { identity: label(i), facesRemoved: facesEach },
    );
    t.is(result.identityRef, gallery.deployment.identityRef(label(i)));
  }
  gallery.close();

  const files = readAllFiles(root);
  t.log(files.map(({ file, bytes }) => `${path.basename(file)} ${bytes.byteLength} B`).join(', '));

  for (const i of eraseIndices) {
    for (const [what, patterns] of vectorPatterns(enrolled.get(i)!)) {
      t.deepEqual(filesHolding(files, patterns), [], `erased identity ${i} ${what} still present`);
    }
    const strings = [label(i), `metadata of ${label(i)}`];
    for (let j = 0; j < facesEach; j++) strings.push(source(i, j));
    for (const text of strings) {
      t.deepEqual(filesHolding(files, [Buffer.from(text, 'utf8')]), [], `'${text}' still present`);
    }
  }

  const reopened = await openGallery(dir, { config: CONFIG, indexDir });
  t.teardown(() => reopened.close());
  const erased = new Set(eraseIndices.map(label));
  for (const [i, faces] of enrolled) {
    if (eraseIndices.includes(i)) continue;
    for (const [what, patterns] of vectorPatterns(faces)) {
      t.true(filesHolding(files, patterns).length > 0, `kept identity ${i} ${what} missing`);
    }
    t.true(filesHolding(files, [Buffer.from(label(i), 'utf8')]).length > 0);

    const [best] = reopened.search(faces[0]!.fused, 5);
    t.is(best?.identity, label(i));
    t.true(best!.score > 0.999);
  }
  for (const faces of [...eraseIndices].map((i) => enrolled.get(i)!)) {
    for (const match of reopened.search(faces[0]!.fused, 50)) t.false(erased.has(match.identity));
  }
  t.is(reopened.stats().faces, (identities - eraseIndices.length) * facesEach);
  t.is(reopened.stats().indexCount, (identities - eraseIndices.length) * facesEach);
}

test('erase leaves no byte of the identity in any gallery file', async (t) => {
  await eraseAndScan(t, 3, 3, [1]);
});

test('erasing several identities from a larger gallery leaves none of their bytes', async (t) => {
  await eraseAndScan(t, 40, 3, [0, 7, 19, 20, 39]);
});

test('erase also clears an index kept in a separate folder', async (t) => {
  await eraseAndScan(t, 3, 2, [0], true);
});

test('erase of an unknown identity is identity_not_found and changes nothing', async (t) => {
  const dir = tempDir(t);
  const random = rng(5);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  gallery.enrol('alice', [randomFace(random, 'a.jpg')]);
  const before = gallery.stats();

  const error = t.throws(() => gallery.erase('bob'));
  t.is((error as { code?: string }).code, 'identity_not_found');
  t.is((error as { input?: string }).input, 'bob');
  t.deepEqual(gallery.stats(), before);
  t.is(gallery.getIdentity('alice').faces.length, 1);
});

test('an erased identity can be enrolled again and is found again', async (t) => {
  const dir = tempDir(t);
  const random = rng(6);
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  gallery.enrol('kept', [randomFace(random, 'k.jpg')]);
  const first = randomFace(random, 'first.jpg');
  gallery.enrol('carol', [first]);

  gallery.erase('carol');
  t.false(gallery.search(first.fused, 10).some((m) => m.identity === 'carol'));
  t.throws(() => gallery.getIdentity('carol'), { instanceOf: Error, message: /no identity/ });

  const second = randomFace(random, 'second.jpg');
  const { faceIds } = gallery.enrol('carol', [second]);
  const [best] = gallery.search(second.fused, 1);
  t.deepEqual(best && { identity: best.identity, faceId: best.faceId }, {
    identity: 'carol',
    faceId: faceIds[0],
  });
  t.deepEqual(
    gallery.getIdentity('carol').faces.map((f) => f.source),
    ['second.jpg'],
  );
});
