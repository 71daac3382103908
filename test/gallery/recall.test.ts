import test, { type ExecutionContext } from 'ava';

import { openGallery, type EnrolFace, type Gallery } from '../../src/gallery/gallery.ts';
import { clusteredVector, CONFIG, rng, tempDir, unitVector } from './fixtures.ts';

const DIM = 128;
const QUERIES = 200;
const K = 10;
const TINY = Float32Array.of(1, 0, 0, 0);

async function galleryOf(
  t: ExecutionContext,
  identities: Float32Array[][],
  efSearch: number,
): Promise<Gallery> {
  const config = { ...CONFIG, appearanceDim: TINY.length, fusedDim: DIM };
  const gallery = await openGallery(tempDir(t), { config, efSearch, saveDelayMs: 60_000 });
  t.teardown(() => gallery.close());

  identities.forEach((vectors, id) => {
    for (let start = 0; start < vectors.length; start += 1000) {
      const faces: EnrolFace[] = vectors.slice(start, start + 1000).map((fused, i) => ({
        source: `${id}-${start + i}.jpg`,
        box: { x: 0, y: 0, width: 1, height: 1 },
        pose: { yaw: 0, pitch: 0, roll: 0 },
        quality: 1,
        detectorScore: 1,
        meshScore: 1,
        appearance: TINY,
        geometry: TINY,
        fused,
      }));
      gallery.enrol(`identity-${id}`, faces);
    }
  });
  return gallery;
}

/** Share of the exact top-k faces that the HNSW top-k also returns. */
function recallAtK(gallery: Gallery, queries: Float32Array[]): number {
  const exact = gallery.searchExactMany(queries, K);
  let hits = 0;
  queries.forEach((query, q) => {
    const truth = new Set(exact[q]!.map((m) => m.faceId));
    hits += gallery.search(query, K).filter((m) => truth.has(m.faceId)).length;
  });
  return hits / (queries.length * K);
}

// Uniform random directions are HNSW's worst case: in 128-D all distances are nearly equal.
// With the default efSearch of 64 recall@10 is only about 0.54 here; efSearch 512 is needed.
test('recall@10 on 20,000 uniform random 128-D vectors is >= 0.95 at efSearch 512', async (t) => {
  const random = rng(2024);
  const vectors = Array.from({ length: 20_000 }, () => unitVector(random, DIM));
  const chunks = Array.from({ length: 20 }, (_, i) => vectors.slice(i * 1000, (i + 1) * 1000));
  const gallery = await galleryOf(t, chunks, 512);

  const recall = recallAtK(
    gallery,
    Array.from({ length: QUERIES }, () => unitVector(random, DIM)),
  );
  t.log(`recall@${K} ${recall.toFixed(4)}`);
  t.true(recall >= 0.95, `recall@${K} = ${recall}`);
});

test('recall@10 on 10,000 face-like clustered vectors is >= 0.95 at efSearch 64', async (t) => {
  const random = rng(7);
  const centres = Array.from({ length: 500 }, () => unitVector(random, DIM));
  const gallery = await galleryOf(
    t,
    centres.map((centre) => Array.from({ length: 20 }, () => clusteredVector(random, centre))),
    64,
  );

  const probes = Array.from({ length: QUERIES }, (_, i) => clusteredVector(random, centres[i]!));
  const recall = recallAtK(gallery, probes);
  t.log(`recall@${K} ${recall.toFixed(4)}`);
  t.true(recall >= 0.95, `recall@${K} = ${recall}`);
});
