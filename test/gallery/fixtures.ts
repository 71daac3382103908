import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import type { ExecutionContext } from 'ava';

import type { EnrolFace, GalleryConfig } from '../../src/gallery/gallery.ts';

/** Dimensions of the real pipeline: 512-D appearance, 126 geometry numbers, 128-D fused. */
export const CONFIG: GalleryConfig = {
  embedderId: 'test-embedder-v1',
  appearanceDim: 512,
  fusionId: 'test-fusion-v1',
  fusedDim: 128,
  alignMode: 'mesh',
};

export const GEOMETRY_DIM = 126;

/** A fresh temporary directory removed when the test ends. */
export function tempDir(t: ExecutionContext, prefix = 'reidb-gallery-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A small seeded generator (mulberry32), so failures can be replayed. */
export function rng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random unit vector (Gaussian directions via Box-Muller). */
export function unitVector(random: () => number, dim: number): Float32Array {
  const out = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    const u = Math.max(random(), 1e-12);
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  }
  return normalise(out);
}

export function normalise(vector: Float32Array): Float32Array {
  const norm = Math.hypot(...vector);
  return vector.map((value) => value / norm);
}

/** A face with random vectors of the CONFIG dimensions. */
export function randomFace(random: () => number, source: string): EnrolFace {
  return {
    source,
    camera: 'cam-1',
    capturedAt: '2024-05-01T10:00:00.000Z',
    box: { x: 10, y: 20, width: 100, height: 120 },
    pose: { yaw: 5, pitch: -3, roll: 1 },
    quality: 0.9,
    detectorScore: 0.95,
    meshScore: 0.9,
    appearance: unitVector(random, CONFIG.appearanceDim),
    geometry: Float32Array.from({ length: GEOMETRY_DIM }, () => random() * 3),
    fused: unitVector(random, CONFIG.fusedDim),
  };
}

/**
 * Face-like embeddings: each synthetic identity has a random unit centre and its faces are
 * normalise(centre + noise * u) for random unit u. noise 0.75 gives a same-identity cosine of
 * about 1 / (1 + 0.75^2) = 0.64 and a different-identity cosine near 0, as real face
 * embeddings roughly do.
 */
export function clusteredVector(
  random: () => number,
  centre: Float32Array,
  noise = 0.75,
): Float32Array {
  const u = unitVector(random, centre.length);
  return normalise(centre.map((value, i) => value + noise * u[i]!));
}
