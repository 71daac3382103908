import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import {
  runBenchmark,
  type FeatureProvider,
  type ProvidedFace,
  type ProvidedImage,
} from '../../src/bench/run.ts';

/** A unit 2-D vector at `deg` degrees, padded to 4 dimensions. */
const at = (deg: number, quality = 0.9, yaw = 0): ProvidedFace => {
  const r = (deg * Math.PI) / 180;
  const vector = Float32Array.from([Math.cos(r), Math.sin(r), 0, 0]);
  return { vector, yaw, pitch: 0, roll: 0, quality };
};

/** Fake provider: answers from a table keyed by path relative to the dataset root. */
function fakeProvider(
  root: string,
  table: Record<string, Omit<ProvidedImage, 'file'>>,
): FeatureProvider {
  return {
    embedderId: 'fake-2d',
    async *extract(files: string[]): AsyncIterable<ProvidedImage> {
      for (const file of files) {
        const entry = table[path.relative(root, file)];
        if (entry !== undefined) yield { file, ...entry };
      }
    },
  };
}

function tempDataset(
  t: { teardown(fn: () => void): void },
  files: string[],
  extra: Record<string, string> = {},
): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'reidb-run-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  for (const rel of files) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), '');
  }
  for (const [rel, content] of Object.entries(extra)) writeFileSync(path.join(root, rel), content);
  return root;
}

const close = (a: number | null, b: number): boolean => a !== null && Math.abs(a - b) < 1e-6;

test('runBenchmark: leave-one-out, rank1 = 2/3, a no-face query and an error', async (t) => {
  const files = ['A/1.jpg', 'A/2.jpg', 'A/3.jpg', 'B/1.jpg', 'B/2.jpg', 'C/1.jpg', 'C/2.jpg'];
  files.push('E/1.jpg');
  const root = tempDataset(t, files, {
    'pairs.csv':
      'img_a,img_b,same\nA/1.jpg,A/2.jpg,1\nB/1.jpg,B/2.jpg,1\nA/1.jpg,B/1.jpg,0\n' +
      'A/2.jpg,C/1.jpg,0\nA/3.jpg,B/1.jpg,0\n',
  });

  // Angles: A 0/10, B 90/100, C 50/140. Leave-one-out ranks (by angular distance):
  // A1, A2, B1, B2 find their partner at rank 1 (10 deg away).
  // C1 (50): A2 40, B1 40, A1 50, B2 50, C2 90 -> rank 5, AP 1/5.
  // C2 (140): B2 40, B1 50, C1 90 -> rank 3, AP 1/3.
  // Rank-1 = 4/6, Rank-5 = 6/6, mAP = (4 + 1/5 + 1/3) / 6. A3 has no face: a query that counts
  // only in rank1IncludingNoFace = 4/7. E1 fails extraction (single image, gallery only).
  // A1 also holds a low-quality face at 140 deg that must not be used.
  const provider = fakeProvider(root, {
    'A/1.jpg': { faces: [at(140, 0.2, 0), at(0, 0.9, 5)], stageMs: { detect: 1, embed: 10 } },
    'A/2.jpg': { faces: [at(10, 0.9, -5)], stageMs: { detect: 3, embed: 20 } },
    'A/3.jpg': { faces: [], stageMs: { detect: 2 } },
    'B/1.jpg': { faces: [at(90, 0.9, 20)] },
    'B/2.jpg': { faces: [at(100, 0.9, -25)] },
    'C/1.jpg': { faces: [at(50, 0.9, 50)] },
    'C/2.jpg': { faces: [at(140, 0.9, -55)] },
    'E/1.jpg': { faces: [], error: { code: 'corrupt_image', message: 'bad bytes' } },
  });
  const options = { root, layout: 'folder' as const, pairs: 'pairs.csv', align: 'mesh' };
  const r = await runBenchmark(options, provider);

  t.is(r.protocol, 'loo');
  t.true(close(r.rank1, 2 / 3));
  t.true(close(r.rank5, 1));
  t.true(close(r.rank10, 1));
  t.true(close(r.mAP, (4 + 1 / 5 + 1 / 3) / 6));
  t.true(close(r.rank1IncludingNoFace, 4 / 7));
  t.is(r.queries, 7);
  t.is(r.gallery, 6);
  t.deepEqual(r.counts, {
    images: 8,
    queriesScored: 6,
    queriesNoFace: 1,
    queriesWithoutMatch: 0,
    junkQueries: 0,
    galleryTotal: 8,
    galleryNoFace: 2,
    distractors: 0,
  });
  t.deepEqual(r.noFace, { count: 1, share: 1 / 8 });
  t.is(r.errors.count, 1);
  t.is(r.errors.list[0].code, 'corrupt_image');
  t.is(path.relative(root, r.errors.list[0].file), 'E/1.jpg');

  // Per yaw from the mesh: A |5| -> 0-15 (2/2), B 20, 25 -> 15-30 (2/2), C 50, 55 -> 45-60 (0/2).
  t.is(r.perYaw.yawSource, 'mesh');
  t.deepEqual(r.perYaw.bins['0-15'], { queries: 2, rank1: 1, noFace: 0, rank1IncludingNoFace: 1 });
  t.is(r.perYaw.bins['15-30'].rank1, 1);
  t.is(r.perYaw.bins['45-60'].rank1, 0);
  t.is(r.perYaw.bins['60+'].queries, 0);
  t.is(r.perOcclusion, null);

  // Pairs: the A3 pair is left out; genuine (cos 10 deg) beat impostors (cos 90, cos 40).
  t.deepEqual(
    { ...r.pairs!, file: path.basename(r.pairs!.file) },
    { file: 'pairs.csv', total: 5, used: 4, excludedNoFace: 1, genuine: 2, impostor: 2 },
  );
  t.is(r.auc, 1);
  t.is(r.tarAtFar!['0.1'].tar, null);
  t.regex(r.tarAtFar!['0.1'].reason!, /needs >= 10 impostor pairs, have 2/);

  // Stage medians: detect {1, 3, 2} -> 2, embed {10, 20} -> 15.
  t.deepEqual(r.stageMs, { detect: 2, embed: 15 });
  t.true(r.imagesPerSecond > 0);
  t.is(r.embedderId, 'fake-2d');
  t.is(r.align, 'mesh');
  t.is(r.cmc['20'], 1);

  // The whole result survives JSON.
  t.deepEqual(JSON.parse(JSON.stringify(r)).rank1, r.rank1);
});

test('runBenchmark: frontal gallery, dataset yaw, occlusion labels, distractors', async (t) => {
  const files = ['A/f.jpg', 'A/p.jpg', 'A/q.jpg', 'B/f.jpg', 'B/p.jpg'];
  const root = tempDataset(t, files, {
    'labels.csv':
      'file,pan,tilt,mask_type\nA/f.jpg,0,0,none\nA/p.jpg,45,0,cloth\nA/q.jpg,60,0,none\n' +
      'B/f.jpg,15,0,none\nB/p.jpg,-90,0,cloth\n',
  });
  const clutter = tempDataset(t, ['x/1.jpg']);

  // By dataset yaw the gallery is A/f (0 deg) and B/f (15 deg), plus the distractor; probes are
  // A/p (45), A/q (60, no face) and B/p (-90). Embedding angles: A/f 0, B/f 90, distractor 20.
  // A/p at 30: distractor 10 deg away, A/f 30 -> rank 2, AP 1/2. B/p at 80: B/f 10 deg away ->
  // rank 1. Rank-1 = 1/2, mAP = 3/4; A/q lands in bin 45-60 as a faceless query.
  const provider: FeatureProvider = {
    embedderId: 'fake',
    async *extract(list) {
      const table: Record<string, ProvidedFace[]> = {
        [path.join(root, 'A/f.jpg')]: [at(0)],
        [path.join(root, 'A/p.jpg')]: [at(30)],
        [path.join(root, 'A/q.jpg')]: [],
        [path.join(root, 'B/f.jpg')]: [at(90)],
        [path.join(root, 'B/p.jpg')]: [at(80)],
        [path.join(clutter, 'x/1.jpg')]: [at(20)],
      };
      for (const file of list) yield { file, faces: table[file] };
    },
  };
  const r = await runBenchmark(
    { root, layout: 'folder', protocol: 'frontal-gallery', distractors: clutter },
    provider,
  );
  t.is(r.queries, 3);
  t.is(r.gallery, 3);
  t.is(r.counts.distractors, 1);
  t.true(close(r.rank1, 0.5));
  t.true(close(r.mAP, (1 / 2 + 1) / 2));
  t.is(r.perYaw.yawSource, 'dataset');
  const bin = (queries: number, rank1: number | null, noFace: number, withNoFace: number) => ({
    queries,
    rank1,
    noFace,
    rank1IncludingNoFace: withNoFace,
  });
  t.deepEqual(r.perYaw.bins['30-45'], bin(1, 0, 0, 0));
  t.deepEqual(r.perYaw.bins['45-60'], bin(0, null, 1, 0));
  t.is(r.perYaw.bins['60+'].rank1, 1);
  t.deepEqual(r.perOcclusion!.cloth, bin(2, 0.5, 0, 0.5));
  t.deepEqual(r.perOcclusion!.none, bin(0, null, 1, 0));
  t.is(r.auc, null);
  t.is(r.tarAtFar, null);
});

test('runBenchmark: an unanswered file is an error; a bad layout throws', async (t) => {
  const root = tempDataset(t, ['A/1.jpg', 'A/2.jpg']);
  const provider = fakeProvider(root, { 'A/1.jpg': { faces: [at(0)] } });
  const r = await runBenchmark({ root, layout: 'folder' }, provider);
  t.is(r.errors.count, 1);
  t.regex(r.errors.list[0].message, /returned no result/);
  t.is(r.counts.queriesNoFace, 1);
  t.is(r.counts.queriesWithoutMatch, 1); // A/1 has no partner with a face left
  t.is(r.rank1, null);

  await t.throwsAsync(runBenchmark({ root, layout: 'market1501' }, provider), {
    message: /query folder/,
  });
});
