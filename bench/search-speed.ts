/**
 * Gallery search speed and recall at scale.
 *
 *   npx tsx bench/search-speed.ts --faces 100000 --dim 128 [--real FILE.json]
 *
 * Builds a gallery of synthetic face-like embeddings (clustered unit vectors: --per-identity
 * faces around each random identity centre, same-identity cosine about 0.64), optionally
 * mixed with real embeddings from a JSON array of float arrays (each enrolled as its own
 * identity and used for half of the probes, with added noise). Measures insert speed through
 * the Gallery facade for the first --facade-faces faces, bulk SQLite insert and index build
 * for the rest, then search latency (p50/p95/p99 in ms over --queries probes, k = 10) through
 * the facade and recall@10 against exact search, for each --ef value. Optionally times one
 * erase (a full index rebuild). Prints one JSON document on stdout; progress goes to stderr.
 *
 * Options (defaults): --faces 100000, --dim 128, --appearance-dim 512, --per-identity 20,
 * --noise 0.75, --queries 1000, --ef 64 (comma list, e.g. 32,64,128), --facade-faces 2000,
 * --erase true, --seed 1, --dir DIR (default a temporary folder, removed afterwards).
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { openGallery, type EnrolFace, type Gallery, type Match } from '../src/gallery/gallery.ts';
import { GalleryStore } from '../src/gallery/store.ts';

const { values: args } = parseArgs({
  options: {
    faces: { type: 'string', default: '100000' },
    dim: { type: 'string', default: '128' },
    'appearance-dim': { type: 'string', default: '512' },
    'per-identity': { type: 'string', default: '20' },
    noise: { type: 'string', default: '0.75' },
    queries: { type: 'string', default: '1000' },
    ef: { type: 'string', default: '64' },
    'facade-faces': { type: 'string', default: '2000' },
    erase: { type: 'string', default: 'true' },
    seed: { type: 'string', default: '1' },
    real: { type: 'string' },
    dir: { type: 'string' },
  },
});

const FACES = Number(args.faces);
const DIM = Number(args.dim);
const APPEARANCE_DIM = Number(args['appearance-dim']);
const PER_IDENTITY = Number(args['per-identity']);
const NOISE = Number(args.noise);
const QUERIES = Number(args.queries);
const EF_VALUES = args.ef!.split(',').map(Number);
const FACADE_FACES = Math.min(Number(args['facade-faces']), FACES);
const K = 10;

function progress(message: string): void {
  process.stderr.write(`[search-speed] ${message}\n`);
}

/** mulberry32: small, seeded, repeatable. */
function rng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function normalise(vector: Float32Array): Float32Array {
  let sum = 0;
  for (const value of vector) sum += value * value;
  const norm = Math.sqrt(sum);
  return vector.map((value) => value / norm);
}

function unitVector(random: () => number, dim: number): Float32Array {
  const out = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    out[i] = Math.sqrt(-2 * Math.log(Math.max(random(), 1e-12))) * Math.cos(2 * Math.PI * random());
  }
  return normalise(out);
}

/** A face of the identity with centre `centre`: normalise(centre + noise * random unit). */
function sample(random: () => number, centre: Float32Array, noise: number): Float32Array {
  const u = unitVector(random, centre.length);
  return normalise(centre.map((value, i) => value + noise * u[i]!));
}

function face(fused: Float32Array, source: string): EnrolFace {
  // Appearance is filler of the real size so that rows weigh what real rows weigh.
  const appearance = new Float32Array(APPEARANCE_DIM);
  for (let i = 0; i < APPEARANCE_DIM; i++) appearance[i] = fused[i % fused.length]!;
  return {
    source,
    box: { x: 0, y: 0, width: 112, height: 112 },
    pose: { yaw: 0, pitch: 0, roll: 0 },
    quality: 1,
    detectorScore: 1,
    meshScore: 1,
    appearance,
    geometry: fused.subarray(0, Math.min(126, fused.length)),
    fused,
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function round(value: number, digits = 3): number {
  return Number(value.toFixed(digits));
}

function rate(faces: number, seconds: number) {
  return { faces, seconds: round(seconds, 2), facesPerSecond: Math.round(faces / seconds) };
}

function fileBytes(dir: string, name: string): number {
  try {
    return statSync(path.join(dir, name)).size;
  } catch {
    return 0;
  }
}

function readReal(file: string): Float32Array[] {
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as number[][];
  return parsed.map((vector, i) => {
    if (!Array.isArray(vector) || vector.length !== DIM) {
      throw new Error(`${file}: vector ${i} has ${vector?.length} values, --dim is ${DIM}`);
    }
    return normalise(Float32Array.from(vector));
  });
}

/** The gallery: [identity label, fused vectors] in enrolment order. */
function plan(random: () => number, real: Float32Array[]): {
  identities: [string, Float32Array[]][];
  centres: Float32Array[];
} {
  const identities: [string, Float32Array[]][] = real.map((v, i) => [`real-${i}`, [v]]);
  const centres: Float32Array[] = [];
  let left = FACES - real.length;
  while (left > 0) {
    const centre = unitVector(random, DIM);
    const n = Math.min(PER_IDENTITY, left);
    const faces = Array.from({ length: n }, () => sample(random, centre, NOISE));
    identities.push([`synthetic-${centres.length}`, faces]);
    centres.push(centre);
    left -= n;
  }
  // Real identities spread through the gallery rather than all at the start.
  identities.sort(() => random() - 0.5);
  return { identities, centres };
}

function measureSearch(gallery: Gallery, queries: Float32Array[], exact: Match[][]) {
  for (let i = 0; i < Math.min(50, queries.length); i++) gallery.search(queries[i]!, K);

  const times: number[] = [];
  let hits = 0;
  queries.forEach((query, q) => {
    const started = performance.now();
    const matches = gallery.search(query, K);
    times.push(performance.now() - started);
    const truth = new Set(exact[q]!.map((m) => m.faceId));
    hits += matches.filter((m) => truth.has(m.faceId)).length;
  });
  times.sort((a, b) => a - b);

  return {
    p50Ms: round(percentile(times, 50)),
    p95Ms: round(percentile(times, 95)),
    p99Ms: round(percentile(times, 99)),
    maxMs: round(times[times.length - 1]!),
    meanMs: round(times.reduce((a, b) => a + b, 0) / times.length),
    recallAt10: round(hits / (queries.length * K), 4),
  };
}

async function main(): Promise<void> {
  const random = rng(Number(args.seed));
  const dir = args.dir ?? mkdtempSync(path.join(os.tmpdir(), 'reidb-bench-'));
  const config = {
    embedderId: 'bench-synthetic',
    appearanceDim: APPEARANCE_DIM,
    fusionId: 'bench-synthetic',
    fusedDim: DIM,
    alignMode: 'mesh' as const,
  };
  const real = args.real === undefined ? [] : readReal(args.real);
  const { identities, centres } = plan(random, real);
  progress(`${FACES} faces, ${identities.length} identities, dim ${DIM}, dir ${dir}`);

  // 1. Enrolment through the facade: one transaction (fsync) and index insert per identity.
  let gallery = await openGallery(dir, { config, saveDelayMs: 60_000 });
  let enrolled = 0;
  let next = 0;
  let started = performance.now();
  while (enrolled < FACADE_FACES && next < identities.length) {
    const [label, vectors] = identities[next++]!;
    gallery.enrol(label, vectors.map((v, i) => face(v, `${label}-${i}.jpg`)));
    enrolled += vectors.length;
  }
  const facadeSeconds = (performance.now() - started) / 1000;
  gallery.close();
  progress(`facade: ${enrolled} faces in ${facadeSeconds.toFixed(1)} s`);

  // 2. The rest straight into SQLite, many identities per transaction.
  const store = GalleryStore.open(path.join(dir, 'gallery.sqlite'));
  started = performance.now();
  let bulk = 0;
  store.db.transaction(() => {
    for (; next < identities.length; next++) {
      const [label, vectors] = identities[next]!;
      store.enrol(label, vectors.map((v, i) => face(v, `${label}-${i}.jpg`)));
      bulk += vectors.length;
    }
  })();
  const bulkSeconds = (performance.now() - started) / 1000;
  store.close();
  progress(`SQLite bulk: ${bulk} faces in ${bulkSeconds.toFixed(1)} s`);

  // 3. Open: finds the index stale and adds the bulk faces from SQLite, then saves it.
  started = performance.now();
  gallery = await openGallery(dir, { config });
  const catchUpSeconds = (performance.now() - started) / 1000;
  gallery.close();
  progress(`index catch-up of ${bulk} faces at open: ${catchUpSeconds.toFixed(1)} s`);

  started = performance.now();
  gallery = await openGallery(dir, { config });
  const openSeconds = (performance.now() - started) / 1000;
  const stats = gallery.stats();

  // 4. Probes: new samples of gallery identities (and of real embeddings, when given).
  const queries = Array.from({ length: QUERIES }, (_, q) => {
    const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;
    if (real.length > 0 && q % 2 === 1) return sample(random, pick(real), 0.3);
    return sample(random, pick(centres), NOISE);
  });
  started = performance.now();
  const exact = gallery.searchExactMany(queries, K);
  const exactMsPerQuery = (performance.now() - started) / QUERIES;
  progress(`exact search: ${exactMsPerQuery.toFixed(1)} ms per probe (one pass for all)`);

  const search = [];
  for (const efSearch of EF_VALUES) {
    gallery.close();
    gallery = await openGallery(dir, { config, efSearch });
    search.push({ efSearch, k: K, queries: QUERIES, ...measureSearch(gallery, queries, exact) });
    progress(`efSearch ${efSearch}: ${JSON.stringify(search[search.length - 1])}`);
  }

  // 5. One erase: deletes the rows and rebuilds the whole index without them.
  let erase: { facesRemoved: number; seconds: number } | null = null;
  if (args.erase !== 'false') {
    started = performance.now();
    const { facesRemoved } = gallery.erase(identities[0]![0]);
    erase = { facesRemoved, seconds: round((performance.now() - started) / 1000, 2) };
    progress(`erase: ${JSON.stringify(erase)}`);
  }
  gallery.close();

  const report = {
    command: `npx tsx bench/search-speed.ts ${process.argv.slice(2).join(' ')}`.trim(),
    machine: {
      cpu: os.cpus()[0]?.model,
      cpus: os.cpus().length,
      memoryGiB: round(os.totalmem() / 2 ** 30, 1),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
    },
    data: {
      faces: stats.faces,
      identities: stats.identities,
      dim: DIM,
      appearanceDim: APPEARANCE_DIM,
      perIdentity: PER_IDENTITY,
      noise: NOISE,
      realVectors: real.length,
      seed: Number(args.seed),
    },
    insert: {
      facade: rate(enrolled, facadeSeconds),
      sqliteBulk: rate(bulk, bulkSeconds),
      indexCatchUpAtOpen: rate(bulk, catchUpSeconds),
    },
    openSeconds: round(openSeconds, 3),
    files: {
      sqliteBytes: fileBytes(dir, 'gallery.sqlite') + fileBytes(dir, 'gallery.sqlite-wal'),
      indexBytes: fileBytes(dir, 'index.hnsw'),
    },
    search,
    exactSearchMsPerQuery: round(exactMsPerQuery, 2),
    erase,
  };
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');

  if (args.dir === undefined) rmSync(dir, { recursive: true, force: true });
}

await main();
