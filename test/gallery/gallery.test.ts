import test from 'ava';

import { openGallery, type Gallery } from '../../src/gallery/gallery.ts';
import { CONFIG, randomFace, rng, tempDir, unitVector } from './fixtures.ts';

async function open(t: import('ava').ExecutionContext, dir = tempDir(t)): Promise<Gallery> {
  const gallery = await openGallery(dir, { config: CONFIG });
  t.teardown(() => gallery.close());
  return gallery;
}

function codeOf(error: unknown): string | undefined {
  return (error as { code?: string } | undefined)?.code;
}

test('a new gallery has no config until ensureConfig fixes it', async (t) => {
  const dir = tempDir(t);
  const gallery = await openGallery(dir);
  t.is(gallery.config(), null);
  t.deepEqual(gallery.search(unitVector(rng(1), 128), 5), []);
  const early = t.throws(() => gallery.enrol('a', [randomFace(rng(1), 'a.jpg')]));
  t.is(codeOf(early), 'invalid_argument');

  gallery.ensureConfig(CONFIG);
  gallery.ensureConfig({ ...CONFIG });
  t.deepEqual(gallery.config(), CONFIG);
  gallery.close();

  const reopened = await openGallery(dir);
  t.teardown(() => reopened.close());
  t.deepEqual(reopened.config(), CONFIG);
});

test('a different embedder or fusion is gallery_mismatch naming both values', async (t) => {
  const dir = tempDir(t);
  (await openGallery(dir, { config: CONFIG })).close();

  const error = await t.throwsAsync(
    openGallery(dir, { config: { ...CONFIG, embedderId: 'other-embedder' } }),
  );
  t.is(codeOf(error), 'gallery_mismatch');
  t.regex(error!.message, /embedderId is 'test-embedder-v1' in the gallery but 'other-embedder'/);

  const gallery = await open(t, dir);
  const fusion = t.throws(() => gallery.ensureConfig({ ...CONFIG, fusionId: 'fusion-v2' }));
  t.is(codeOf(fusion), 'gallery_mismatch');
  t.regex(fusion!.message, /fusionId is 'test-fusion-v1' in the gallery but 'fusion-v2'/);
});

test('invalid identity labels are rejected and nothing is stored', async (t) => {
  const gallery = await open(t);
  const random = rng(2);
  const bad = [
    '',
    'x'.repeat(129),
    'tab\there',
    'new\nline',
    'nul\u0000',
    'del\u007f',
    'c1\u0085',
    '   ',
    'adm\u202ein',
    'a\u2066b',
    'ada\u200b',
    '\ufeffada',
    'a\u2060da',
    'a\u00adda',
    '\u3164',
    'a\u2028b',
    'ada\u{e0041}',
    'a\uffffb',
    'ana\u206f',
    'ana\u17b4',
    'ana\u{1d173}',
    '\u0600ana',
  ];

  for (const identity of bad) {
    const error = t.throws(() => gallery.enrol(identity, [randomFace(random, 'f.jpg')]));
    t.is(codeOf(error), 'invalid_identity', JSON.stringify(identity));
    t.is(typeof (error as { input?: string }).input, 'string');
  }
  t.deepEqual(gallery.stats(), { identities: 0, faces: 0, indexCount: 0, config: CONFIG });

  // Zero-width joiners are part of scripts and emoji sequences, so they stay allowed.
  for (const identity of [
    'x'.repeat(128),
    'Zoë Ñandú 山田太郎 🙂',
    'a b',
    'می\u200cخواهم',
    '👩\u200d🔬',
  ]) {
    gallery.enrol(identity, [randomFace(random, 'ok.jpg')]);
    t.is(gallery.getIdentity(identity).identity, identity);
  }
});

test('bad faces are invalid_argument and nothing is stored', async (t) => {
  const gallery = await open(t);
  const random = rng(3);
  const good = randomFace(random, 'good.jpg');
  const cases = [
    { ...good, fused: new Float32Array(64) },
    { ...good, fused: new Float32Array(128) },
    { ...good, appearance: new Float32Array(100).fill(1) },
    { ...good, quality: Number.NaN },
    { ...good, source: '' },
    { ...good, capturedAt: 'yesterday' },
  ];
  for (const face of cases) {
    t.is(codeOf(t.throws(() => gallery.enrol('dave', [good, face]))), 'invalid_argument');
  }
  t.is(codeOf(t.throws(() => gallery.enrol('dave', []))), 'invalid_argument');
  t.is(gallery.stats().faces, 0);
  t.is(codeOf(t.throws(() => gallery.getIdentity('dave'))), 'identity_not_found');
});

test('enrol, getIdentity and listIdentities report faces but never vectors', async (t) => {
  const gallery = await open(t);
  const random = rng(4);
  const first = gallery.enrol('erin', [randomFace(random, 'a.jpg'), randomFace(random, 'b.jpg')], {
    team: 'blue',
  });
  t.is(first.faceIds.length, 2);
  const more = gallery.enrol('erin', [randomFace(random, 'c.jpg')]);
  gallery.enrol('frank', [randomFace(random, 'd.jpg')]);

  const erin = gallery.getIdentity('erin');
  t.deepEqual(erin.metadata, { team: 'blue' });
  t.deepEqual(
    erin.faces.map((f) => f.faceId),
    [...first.faceIds, ...more.faceIds],
  );
  t.deepEqual(erin.faces[0]!.box, { x: 10, y: 20, width: 100, height: 120 });
  t.deepEqual(erin.faces[0]!.pose, { yaw: 5, pitch: -3, roll: 1 });
  t.is(erin.faces[0]!.camera, 'cam-1');
  t.false(JSON.stringify(erin).includes('appearance'));
  t.false(JSON.stringify(erin).includes('fused'));

  t.deepEqual(
    gallery.listIdentities(10, 0).map(({ identity, faces }) => ({ identity, faces })),
    [
      { identity: 'erin', faces: 3 },
      { identity: 'frank', faces: 1 },
    ],
  );
  t.deepEqual(
    gallery.listIdentities(1, 1).map((row) => row.identity),
    ['frank'],
  );
  t.like(gallery.stats(), { identities: 2, faces: 4, indexCount: 4 });
});

test('search equals exact search on a small gallery and validates its arguments', async (t) => {
  const gallery = await open(t);
  const random = rng(7);
  for (let i = 0; i < 60; i++) {
    gallery.enrol(`id-${i}`, [randomFace(random, `${i}a.jpg`), randomFace(random, `${i}b.jpg`)]);
  }

  for (let q = 0; q < 20; q++) {
    const query = unitVector(random, 128);
    const approximate = gallery.search(query, 10);
    const exact = gallery.searchExact(query, 10);
    t.deepEqual(
      approximate.map((m) => [m.faceId, m.identity]),
      exact.map((m) => [m.faceId, m.identity]),
    );
    approximate.forEach((m, i) => t.true(Math.abs(m.score - exact[i]!.score) < 1e-5));
    t.true(approximate.every((m, i) => i === 0 || approximate[i - 1]!.score >= m.score));
  }

  const probe = unitVector(random, 128);
  t.is(gallery.search(probe, 1000).length, 120);
  t.true(gallery.search(probe, 1000, 0.1).every((m) => m.score >= 0.1));
  for (const k of [0, 1001, 2.5, Number.NaN]) {
    t.is(codeOf(t.throws(() => gallery.search(probe, k))), 'invalid_argument');
  }
  t.is(codeOf(t.throws(() => gallery.search(new Float32Array(64).fill(1), 5))), 'invalid_argument');
  t.is(codeOf(t.throws(() => gallery.search(probe, 5, 2))), 'invalid_argument');
});

test('a closed gallery refuses calls; close twice is harmless', async (t) => {
  const gallery = await openGallery(tempDir(t), { config: CONFIG });
  gallery.close();
  gallery.close();
  t.is(codeOf(t.throws(() => gallery.stats())), 'closed');
});
