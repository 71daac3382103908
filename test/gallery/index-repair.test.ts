import { readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { openGallery, type EnrolFace, type Gallery } from '../../src/gallery/gallery.ts';
import { GalleryStore } from '../../src/gallery/store.ts';
import type { Logger } from '../../src/log.ts';
import { CONFIG, randomFace, rng, tempDir } from './fixtures.ts';

/** A logger that keeps the messages, to see which repair an open chose. */
function recordingLogger(): { logger: Logger; messages: string[] } {
  const messages: string[] = [];
  const keep = (message: string, fields?: Record<string, unknown>): void => {
    messages.push(fields?.reason === undefined ? message : `${message}: ${String(fields.reason)}`);
  };
  return { logger: { debug: keep, info: keep, warn: keep, error: keep }, messages };
}

/** A closed gallery with `n` single-face identities; returns the faces. */
async function build(dir: string, n: number, seed: number): Promise<EnrolFace[]> {
  const random = rng(seed);
  const gallery = await openGallery(dir, { config: CONFIG });
  const faces: EnrolFace[] = [];
  for (let i = 0; i < n; i++) {
    const face = randomFace(random, `${i}.jpg`);
    gallery.enrol(`person-${i}`, [face]);
    faces.push(face);
  }
  gallery.close();
  return faces;
}

async function reopen(
  t: ExecutionContext,
  dir: string,
): Promise<{ gallery: Gallery; messages: string[] }> {
  const { logger, messages } = recordingLogger();
  const gallery = await openGallery(dir, { config: CONFIG, logger });
  t.teardown(() => gallery.close());
  return { gallery, messages };
}

/** Every face is its own best match under its identity. */
function assertAllFound(
  t: ExecutionContext,
  gallery: Gallery,
  faces: EnrolFace[],
  names: string[],
): void {
  faces.forEach((face, i) => {
    const [best] = gallery.search(face.fused, 1);
    t.is(best?.identity, names[i]);
  });
  t.is(gallery.stats().indexCount, gallery.stats().faces);
}

test('an intact, current index file is loaded as it is', async (t) => {
  const dir = tempDir(t);
  const faces = await build(dir, 20, 1);
  const { gallery, messages } = await reopen(t, dir);
  t.deepEqual(messages, []);
  assertAllFound(
    t,
    gallery,
    faces,
    faces.map((_, i) => `person-${i}`),
  );
});

test('faces committed to SQLite but never saved to the index are found after reopen', async (t) => {
  const dir = tempDir(t);
  const faces = await build(dir, 10, 2);

  // The crash window: SQLite commits, the process dies before the index is written.
  const random = rng(22);
  const store = GalleryStore.open(path.join(dir, 'gallery.sqlite'));
  const late = [randomFace(random, 'late-1.jpg'), randomFace(random, 'late-2.jpg')];
  store.enrol('late-comer', late);
  store.close();

  const { gallery, messages } = await reopen(t, dir);
  t.true(messages.includes('index caught up with SQLite'), messages.join(' | '));
  assertAllFound(
    t,
    gallery,
    [...faces, ...late],
    [...faces.map((_, i) => `person-${i}`), 'late-comer', 'late-comer'],
  );

  gallery.close();
  const again = await reopen(t, dir);
  t.deepEqual(again.messages, []);
});

test('an index file holding faces SQLite no longer has is repaired without them', async (t) => {
  const dir = tempDir(t);
  const faces = await build(dir, 10, 3);

  // The crash window of erase: rows deleted, index file not yet rewritten.
  const store = GalleryStore.open(path.join(dir, 'gallery.sqlite'));
  store.erase('person-4');
  store.close();

  const { gallery, messages } = await reopen(t, dir);
  t.true(messages.includes('index caught up with SQLite'), messages.join(' | '));
  t.is(gallery.stats().indexCount, 9);
  t.false(gallery.search(faces[4]!.fused, 10).some((m) => m.identity === 'person-4'));
});

const damage: [string, (file: string) => void][] = [
  ['missing', (file) => rmSync(file)],
  ['truncated', (file) => truncateSync(file, Math.floor(readFileSync(file).byteLength / 3))],
  [
    'scribbled on',
    (file) => {
      const bytes = readFileSync(file);
      for (let i = 0; i < 64; i++) bytes[(i * 977 + 100) % bytes.byteLength] ^= 0xa5;
      writeFileSync(file, bytes);
    },
  ],
  ['replaced by text', (file) => writeFileSync(file, 'not an index')],
];

for (const [what, spoil] of damage) {
  test(`an index file that is ${what} is rebuilt from SQLite and saved`, async (t) => {
    const dir = tempDir(t);
    const faces = await build(dir, 30, 4);
    spoil(path.join(dir, 'index.hnsw'));

    const { gallery, messages } = await reopen(t, dir);
    t.true(
      messages.some((m) => m.startsWith('rebuilding index')),
      messages.join(' | '),
    );
    assertAllFound(
      t,
      gallery,
      faces,
      faces.map((_, i) => `person-${i}`),
    );

    gallery.close();
    t.deepEqual((await reopen(t, dir)).messages, []);
  });
}

test('a missing or unreadable meta file makes the index rebuild', async (t) => {
  const dir = tempDir(t);
  const faces = await build(dir, 10, 5);
  writeFileSync(path.join(dir, 'index.meta.json'), '{ half');

  const { gallery, messages } = await reopen(t, dir);
  t.true(
    messages.some((m) => m.includes('index.meta.json is unreadable')),
    messages.join(' | '),
  );
  assertAllFound(
    t,
    gallery,
    faces,
    faces.map((_, i) => `person-${i}`),
  );
});

test('an index and meta pair from an older save is caught up', async (t) => {
  const dir = tempDir(t);
  const faces = await build(dir, 5, 6);
  const oldIndex = readFileSync(path.join(dir, 'index.hnsw'));
  const oldMeta = readFileSync(path.join(dir, 'index.meta.json'));

  const random = rng(66);
  const gallery = await openGallery(dir, { config: CONFIG });
  const newer = [randomFace(random, 'n1.jpg'), randomFace(random, 'n2.jpg')];
  gallery.enrol('newer', newer);
  gallery.close();
  writeFileSync(path.join(dir, 'index.hnsw'), oldIndex);
  writeFileSync(path.join(dir, 'index.meta.json'), oldMeta);

  const reopened = await reopen(t, dir);
  t.true(reopened.messages.includes('index caught up with SQLite'));
  assertAllFound(
    t,
    reopened.gallery,
    [...faces, ...newer],
    [...faces.map((_, i) => `person-${i}`), 'newer', 'newer'],
  );
});

test('temporary files of an unfinished save are removed at open', async (t) => {
  const dir = tempDir(t);
  await build(dir, 3, 7);
  writeFileSync(path.join(dir, 'index.hnsw.tmp-1234-abcd'), 'leftover vectors');

  await reopen(t, dir);
  t.false(readdirSync(dir).some((name) => name.includes('.tmp-')));
});

test('enrolments are saved to the index file after the save delay', async (t) => {
  const dir = tempDir(t);
  const gallery = await openGallery(dir, { config: CONFIG, saveDelayMs: 20 });
  t.teardown(() => gallery.close());
  const before = readFileSync(path.join(dir, 'index.meta.json'), 'utf8');

  gallery.enrol('timed', [randomFace(rng(8), 't.jpg')]);
  t.is(readFileSync(path.join(dir, 'index.meta.json'), 'utf8'), before);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const meta = JSON.parse(readFileSync(path.join(dir, 'index.meta.json'), 'utf8'));
  t.like(meta, { faceCount: 1 });
});

test('slots of erased faces are reused and survive save and reload', async (t) => {
  const dir = tempDir(t);
  const faces = await build(dir, 12, 9);
  const gallery = await openGallery(dir, { config: CONFIG });
  for (const i of [2, 5, 8]) gallery.erase(`person-${i}`);
  t.like(gallery.stats(), { faces: 9, indexCount: 9 });
  gallery.close();

  const { gallery: reopened, messages } = await reopen(t, dir);
  t.deepEqual(messages, []);
  t.like(reopened.stats(), { faces: 9, indexCount: 9 });
  const random = rng(99);
  const added = [randomFace(random, 'x.jpg'), randomFace(random, 'y.jpg')];
  reopened.enrol('new-person', added);
  t.like(reopened.stats(), { faces: 11, indexCount: 11 });

  const kept = faces.filter((_, i) => ![2, 5, 8].includes(i));
  const keptNames = faces.map((_, i) => `person-${i}`).filter((_, i) => ![2, 5, 8].includes(i));
  assertAllFound(t, reopened, [...kept, ...added], [...keptNames, 'new-person', 'new-person']);
  t.is(reopened.search(faces[0]!.fused, 1000).length, 11);
});
