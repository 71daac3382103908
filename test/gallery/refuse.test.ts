import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { openGallery, type EnrolFace } from '../../src/gallery/gallery.ts';

const CONFIG = {
  embedderId: 'test-embedder',
  appearanceDim: 8,
  fusionId: 'concat-test',
  fusedDim: 12,
  alignMode: 'mesh' as const,
};

function face(seed: number): EnrolFace {
  const wave = (n: number, k: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 3.1 + i * k) + 1.5);
  return {
    source: `${seed}.jpg`,
    box: { x: 0, y: 0, width: 50, height: 50 },
    pose: { yaw: 0, pitch: 0, roll: 0 },
    quality: 0.9,
    detectorScore: 0.9,
    meshScore: 1,
    appearance: wave(8, 0.7),
    geometry: wave(4, 1.3),
    fused: wave(12, 0.5),
  };
}

test('refuse rewrites every fused vector from the stored features and rebuilds the index', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-refuse-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gallery = await openGallery(dir, { config: CONFIG, saveDelayMs: 0 });
  const faces = [face(1), face(2), face(3)];
  gallery.enrol('a', faces.slice(0, 2));
  gallery.enrol('b', faces.slice(2));

  // The new fusion: the appearance vector alone, so a probe equal to one face's appearance
  // must now find that face with score 1.
  const appearanceOnly = { id: 'appearance-test', dim: 8, fuse: (a: Float32Array) => a };
  t.deepEqual(gallery.refuse(appearanceOnly), { faces: 3, fusionId: 'appearance-test' });
  t.deepEqual(gallery.config(), { ...CONFIG, fusionId: 'appearance-test', fusedDim: 8 });

  const [best] = gallery.search(faces[2].appearance, 1);
  t.is(best.identity, 'b');
  t.true(Math.abs(best.score - 1) < 1e-5);
  t.throws(() => gallery.search(faces[2].fused, 1), { message: /dim|dimension|length/i });
  gallery.close();

  // Reopened, the saved index is the re-fused one and agrees with exact search.
  const again = await openGallery(dir);
  t.teardown(() => again.close());
  t.is(again.stats().indexCount, 3);
  const approx = again.search(faces[0].appearance, 2);
  const exact = again.searchExact(faces[0].appearance, 2);
  t.deepEqual(
    approx.map((m) => m.faceId),
    exact.map((m) => m.faceId),
  );
  approx.forEach((m, i) => t.true(Math.abs(m.score - exact[i].score) < 1e-5));
});
