import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';

import hnswlib from 'hnswlib-node';

import { ReidbError } from '../errors.ts';

/** Index file names inside a gallery directory. */
export const INDEX_FILE = 'index.hnsw';
export const INDEX_META_FILE = 'index.meta.json';

/** Version of the index.meta.json layout. */
const META_FORMAT = 1;

/**
 * hnswlib-node labels are uint32. Face ids use [1, PLACEHOLDER_BASE); labels from
 * PLACEHOLDER_BASE up mark the deleted slots that erasure filled with noise.
 */
export const PLACEHOLDER_BASE = 0xf000_0000;
const LAST_LABEL = 0xffff_ffff;

export interface VectorIndexOptions {
  /** HNSW graph degree M; default 16. */
  m?: number;
  /** Candidate list size while inserting; default 200. */
  efConstruction?: number;
  /** Candidate list size while searching (raised to k when k is larger); default 64. */
  efSearch?: number;
  /** Room allocated up front, in vectors; default 1024. The index doubles when full. */
  initialCapacity?: number;
  /** Seed of the level generator, so builds are repeatable; default 100. */
  seed?: number;
}

export interface Neighbour {
  label: number;
  /** Cosine similarity in [-1, 1]. */
  score: number;
}

/** What index.meta.json records about the index file beside it. */
export interface IndexMeta {
  format: number;
  dim: number;
  /** index_state of SQLite when the file was written. */
  generation: number;
  faceCount: number;
  maxFaceId: number;
  /** Hex sha256 and size in bytes of index.hnsw, to detect a damaged file. */
  sha256: string;
  bytes: number;
  m: number;
  efConstruction: number;
  savedAt: string;
}

/**
 * An HNSW index (hnswlib, cosine space) over vectors labelled with face ids. It is a cache
 * derived from SQLite: it can always be rebuilt from the fused vectors stored there.
 *
 * hnswlib's markDelete only flags a vector and keeps its bytes, in memory and in the saved
 * file. So `remove` overwrites each removed vector's slot with random noise under a
 * placeholder label and leaves the placeholder flagged deleted; later additions reuse those
 * slots. Search never returns placeholders, and `count` and `labels` leave them out.
 */
export class VectorIndex {
  readonly dim: number;
  readonly m: number;
  readonly efConstruction: number;
  private readonly hnsw: hnswlib.HierarchicalNSW;
  private efSearch: number;
  /** Deleted noise slots in the index. */
  private placeholderCount: number;

  private constructor(hnsw: hnswlib.HierarchicalNSW, dim: number, options: VectorIndexOptions) {
    this.hnsw = hnsw;
    this.dim = dim;
    this.m = options.m ?? 16;
    this.efConstruction = options.efConstruction ?? 200;
    this.efSearch = options.efSearch ?? 64;
    this.placeholderCount = placeholderLabels(hnsw).length;
  }

  /** An empty index for `dim`-dimensional vectors. */
  static create(dim: number, options: VectorIndexOptions = {}): VectorIndex {
    if (!Number.isInteger(dim) || dim < 1) {
      throw new ReidbError('invalid_argument', `index dimension must be a positive integer`, {
        input: String(dim),
      });
    }
    const hnsw = new hnswlib.HierarchicalNSW('cosine', dim);
    hnsw.initIndex({
      maxElements: Math.max(1, options.initialCapacity ?? 1024),
      m: options.m ?? 16,
      efConstruction: options.efConstruction ?? 200,
      randomSeed: options.seed ?? 100,
      allowReplaceDeleted: true,
    });
    return new VectorIndex(hnsw, dim, options);
  }

  /**
   * Reads an index file. Throws when it cannot be read or its dimension is not `dim`; callers
   * check the file's checksum first (readIndexSync does not notice scribbled bytes).
   */
  static read(file: string, dim: number, options: VectorIndexOptions = {}): VectorIndex {
    const hnsw = new hnswlib.HierarchicalNSW('cosine', dim);
    hnsw.readIndexSync(file, true);
    if (hnsw.getNumDimensions() !== dim) {
      throw new Error(`index has dimension ${hnsw.getNumDimensions()}, expected ${dim}`);
    }
    return new VectorIndex(hnsw, dim, options);
  }

  /** Number of live vectors (placeholders not counted). */
  get count(): number {
    return this.hnsw.getCurrentCount() - this.placeholderCount;
  }

  /** Labels of all live vectors, in no particular order. */
  labels(): number[] {
    return this.hnsw.getIdsList().filter((label) => label < PLACEHOLDER_BASE);
  }

  setEfSearch(efSearch: number): void {
    this.efSearch = efSearch;
  }

  /**
   * Adds one vector (normalised by hnswlib) under `label`, an integer in
   * [1, PLACEHOLDER_BASE). It takes a placeholder's slot when there is one, else grows the
   * index when full.
   */
  add(label: number, vector: Float32Array): void {
    if (!Number.isInteger(label) || label < 1 || label >= PLACEHOLDER_BASE) {
      throw new ReidbError('invalid_argument', `index label ${label} is out of range`, {
        input: String(label),
      });
    }

    // With replaceDeleted, hnswlib fills a deleted slot when there is one; only placeholders
    // are ever left deleted.
    if (this.placeholderCount === 0) this.reserve(1);
    this.hnsw.addPoint(Array.from(vector), label, true);
    if (this.placeholderCount > 0) this.placeholderCount--;
  }

  /**
   * Removes vectors so that their bytes are gone from memory (and from the next saved file):
   * each one's slot is overwritten with random noise under a new placeholder label, which is
   * then flagged deleted. Labels not in the index are ignored.
   */
  remove(labels: Iterable<number>): void {
    const present = new Set(this.labels());
    const doomed = [...labels].filter((label) => present.has(label));
    if (doomed.length === 0) return;

    // hnswlib reuses an arbitrary deleted slot, so while overwriting, the only deleted slot
    // must be the one just removed: revive the old placeholders for the duration (nothing can
    // search in between; this is synchronous).
    const placeholders = placeholderLabels(this.hnsw);
    let next = Math.max(PLACEHOLDER_BASE - 1, ...placeholders) + 1;
    if (next + doomed.length - 1 > LAST_LABEL) {
      throw new ReidbError('internal', 'the index has run out of placeholder labels');
    }
    for (const placeholder of placeholders) this.hnsw.unmarkDelete(placeholder);
    for (const label of doomed) {
      this.hnsw.markDelete(label);
      this.hnsw.addPoint(noise(this.dim), next, true);
      placeholders.push(next++);
    }
    for (const placeholder of placeholders) this.hnsw.markDelete(placeholder);
    this.placeholderCount = placeholders.length;
  }

  /** Makes room for `more` vectors, doubling the capacity so growth stays amortised. */
  reserve(more: number): void {
    const needed = this.count + more;
    const capacity = this.hnsw.getMaxElements();
    if (needed <= capacity) return;
    this.hnsw.resizeIndex(Math.max(needed, capacity * 2));
  }

  /**
   * The k nearest vectors by cosine similarity, best first. k is capped at the number of
   * vectors; an empty index gives an empty list.
   */
  search(vector: Float32Array, k: number): Neighbour[] {
    const n = Math.min(k, this.count);
    if (n === 0) return [];

    this.hnsw.setEf(Math.max(this.efSearch, n));
    const { neighbors, distances } = this.hnsw.searchKnn(Array.from(vector), n);
    // float32 rounding can put 1 - distance a hair outside [-1, 1].
    return neighbors.map((label, i) => ({
      label,
      score: Math.max(-1, Math.min(1, 1 - distances[i]!)),
    }));
  }

  /**
   * Writes the index and its meta file into `dir` atomically: each goes to a temporary file
   * that is flushed to disk and then renamed over the old one, so a reader (or a crash) sees
   * either the old pair or the new one, and a damaged pair is caught by the checksum.
   */
  save(dir: string, state: { generation: number; faceCount: number; maxFaceId: number }): void {
    const suffix = `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const indexFile = path.join(dir, INDEX_FILE);
    const indexTemp = indexFile + suffix;

    try {
      // The vectors are biometric data: the file is its owner's alone (hnswlib writes it with
      // the process umask; set the mode before it gets its final name).
      this.hnsw.writeIndexSync(indexTemp);
      chmodSync(indexTemp, 0o600);
      fsyncFile(indexTemp);
      const bytes = readFileSync(indexTemp);
      const meta: IndexMeta = {
        format: META_FORMAT,
        dim: this.dim,
        generation: state.generation,
        faceCount: state.faceCount,
        maxFaceId: state.maxFaceId,
        sha256: createHash('sha256').update(bytes).digest('hex'),
        bytes: bytes.byteLength,
        m: this.m,
        efConstruction: this.efConstruction,
        savedAt: new Date().toISOString(),
      };

      // A crash between the two renames leaves the new index beside the old meta; the
      // checksum rejects that pair and the next open rebuilds.
      renameSync(indexTemp, indexFile);
      writeFileAtomic(path.join(dir, INDEX_META_FILE), JSON.stringify(meta, null, 2) + '\n');
      fsyncFile(dir);
    } finally {
      rmSync(indexTemp, { force: true });
    }
  }
}

/** Reads index.meta.json, or returns a reason why it is unusable. */
export function readIndexMeta(dir: string): IndexMeta | { problem: string } {
  const file = path.join(dir, INDEX_META_FILE);
  if (!existsSync(file)) return { problem: `${INDEX_META_FILE} is missing` };
  try {
    const meta = JSON.parse(readFileSync(file, 'utf8')) as IndexMeta;
    if (meta.format !== META_FORMAT) {
      return { problem: `${INDEX_META_FILE} has format ${meta.format}` };
    }
    return meta;
  } catch (cause) {
    return { problem: `${INDEX_META_FILE} is unreadable: ${(cause as Error).message}` };
  }
}

/**
 * Loads index.hnsw from `dir` when its size and sha256 match the meta file, else returns a
 * reason. Never throws for a bad file: a bad index is rebuilt, not reported.
 */
export function loadIndexFile(
  dir: string,
  dim: number,
  options: VectorIndexOptions = {},
): { index: VectorIndex; meta: IndexMeta } | { problem: string } {
  const meta = readIndexMeta(dir);
  if ('problem' in meta) return meta;
  if (meta.dim !== dim) return { problem: `index has dimension ${meta.dim}, gallery ${dim}` };

  const file = path.join(dir, INDEX_FILE);
  if (!existsSync(file)) return { problem: `${INDEX_FILE} is missing` };
  const bytes = readFileSync(file);
  if (bytes.byteLength !== meta.bytes) {
    return { problem: `${INDEX_FILE} is ${bytes.byteLength} bytes, meta says ${meta.bytes}` };
  }
  if (createHash('sha256').update(bytes).digest('hex') !== meta.sha256) {
    return { problem: `${INDEX_FILE} does not match the checksum in ${INDEX_META_FILE}` };
  }

  try {
    return { index: VectorIndex.read(file, dim, options), meta };
  } catch (cause) {
    return { problem: `${INDEX_FILE} is unreadable: ${(cause as Error).message}` };
  }
}

/**
 * Removes temporary files a crashed save left behind in `dir`; they may hold vectors that
 * have since been erased.
 */
export function removeTemporaryIndexFiles(dir: string): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(dir)) {
    if (name.startsWith(INDEX_FILE + '.tmp-') || name.startsWith(INDEX_META_FILE + '.tmp-')) {
      rmSync(path.join(dir, name), { force: true });
      removed.push(name);
    }
  }
  return removed;
}

/** Removes index.hnsw and its meta file, if present. */
export function removeIndexFiles(dir: string): void {
  rmSync(path.join(dir, INDEX_FILE), { force: true });
  rmSync(path.join(dir, INDEX_META_FILE), { force: true });
}

function placeholderLabels(hnsw: hnswlib.HierarchicalNSW): number[] {
  return hnsw.getIdsList().filter((label) => label >= PLACEHOLDER_BASE);
}

/** A random vector in [-1, 1)^dim from the OS generator: what an erased slot holds. */
function noise(dim: number): number[] {
  const words = new Uint32Array(randomBytes(dim * 4).buffer);
  return Array.from(words, (word) => word / 2 ** 31 - 1);
}

function writeFileAtomic(file: string, text: string): void {
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(temp, text, { mode: 0o600 });
    fsyncFile(temp);
    renameSync(temp, file);
  } finally {
    rmSync(temp, { force: true });
  }
}

/** Flushes a file (or a directory's entries) to disk. */
function fsyncFile(file: string): void {
  const fd = openSync(file, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
