import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';

import { ReidbError } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import { validateIdentity } from './identity.ts';
import { acquireGalleryLock } from './lock.ts';
import {
  GalleryStore,
  type EnrolFace,
  type GalleryConfig,
  type IdentityRecord,
  type IndexState,
} from './store.ts';
import {
  loadIndexFile,
  removeTemporaryIndexFiles,
  VectorIndex,
  type VectorIndexOptions,
} from './vector-index.ts';

export type { EnrolFace, FaceRecord, GalleryConfig, IdentityRecord } from './store.ts';

/** The SQLite file inside a gallery directory (WAL files sit beside it). */
export const DATABASE_FILE = 'gallery.sqlite';

/** Largest k a search accepts. */
export const MAX_K = 1000;

/** Most faces one enrol call accepts. */
export const MAX_FACES_PER_ENROLMENT = 1000;

/** Largest identity metadata, in bytes of JSON. */
export const MAX_METADATA_BYTES = 64 * 1024;

/** One gallery face returned by a search. */
export interface Match {
  identity: string;
  faceId: number;
  /** Cosine similarity in [-1, 1]. */
  score: number;
}

/** One row of listIdentities. */
export interface IdentitySummary {
  identity: string;
  createdAt: string;
  /** Number of enrolled faces. */
  faces: number;
}

export interface GalleryStats {
  identities: number;
  faces: number;
  /** Vectors in the in-memory HNSW index; equals `faces` in a healthy gallery. */
  indexCount: number;
  config: GalleryConfig | null;
}

export interface OpenGalleryOptions {
  /** Default silentLogger. */
  logger?: Logger;
  /** HNSW candidate list size at search time; default 64. Higher is slower and more exact. */
  efSearch?: number;
  /** Folder of NNN_name.sql migrations; default the repository's migrations/. */
  migrationsDir?: string;
  /** When given, checked against (or stored as) the gallery's configuration at open. */
  config?: GalleryConfig;
  /**
   * Delay before the index file is saved after an enrolment, in ms; default 1000. Enrolments
   * within the delay share one save. 0 saves before enrol returns. Nothing is lost when the
   * process dies first: the next open adds the missing faces from SQLite.
   */
  saveDelayMs?: number;
  /** HNSW build parameters; defaults M = 16, efConstruction = 200. */
  index?: Omit<VectorIndexOptions, 'efSearch'>;
  /**
   * Folder for index.hnsw and index.meta.json; default `dir`. The CLI's default gallery keeps
   * them in the repository's indexes/ folder. Erasure rewrites the files wherever they are.
   */
  indexDir?: string;
  /** When true, a directory without a gallery is gallery_not_found instead of a new gallery. */
  mustExist?: boolean;
}

/**
 * Opens the gallery in directory `dir`, creating the directory and an empty gallery when
 * needed. Applies pending schema migrations, then loads the HNSW index, rebuilding it from
 * SQLite when it is missing, damaged (checksum), stale, or holds faces that SQLite no longer
 * has. Throws gallery_mismatch for a gallery written by a newer reidb or one whose
 * configuration disagrees with `options.config`, gallery_corrupt for an unusable database.
 */
export async function openGallery(dir: string, options: OpenGalleryOptions = {}): Promise<Gallery> {
  const logger = options.logger ?? silentLogger;
  const efSearch = options.efSearch ?? 64;
  if (!Number.isInteger(efSearch) || efSearch < 1 || efSearch > 10_000) {
    throw new ReidbError('invalid_argument', 'efSearch must be an integer in 1..10000', {
      input: String(options.efSearch),
    });
  }

  const indexDir = options.indexDir ?? dir;
  if (options.mustExist && !existsSync(path.join(dir, DATABASE_FILE))) {
    throw new ReidbError('gallery_not_found', `no gallery at ${dir} (no ${DATABASE_FILE} there)`, {
      input: dir,
    });
  }
  for (const folder of new Set([dir, indexDir])) {
    try {
      mkdirSync(folder, { recursive: true });
    } catch (cause) {
      throw new ReidbError(
        'invalid_argument',
        `cannot use ${folder} as a gallery folder: ${(cause as Error).message}`,
        {
          input: folder,
          cause,
        },
      );
    }
  }

  const lock = acquireGalleryLock(dir);
  let store: GalleryStore | null = null;
  try {
    const leftovers = removeTemporaryIndexFiles(indexDir);
    if (leftovers.length > 0) logger.warn('removed unfinished index files', { files: leftovers });

    store = GalleryStore.open(path.join(dir, DATABASE_FILE), {
      migrationsDir: options.migrationsDir,
      logger,
    });
    const gallery = new Gallery(dir, store, {
      indexDir,
      logger,
      saveDelayMs: options.saveDelayMs ?? 1000,
      index: { ...options.index, efSearch },
      release: lock.release,
    });
    if (options.config !== undefined) gallery.ensureConfig(options.config);
    return gallery;
  } catch (error) {
    store?.close();
    lock.release();
    throw error;
  }
}

interface GalleryOptions {
  /** Releases the directory's lock; called once by close(). */
  release: () => void;
  indexDir: string;
  logger: Logger;
  saveDelayMs: number;
  index: VectorIndexOptions;
}

/**
 * A face gallery: identities with their enrolled faces in SQLite (the truth) and an HNSW
 * index of the fused vectors (derived, rebuilt whenever in doubt). Create with openGallery.
 * Writes go to SQLite first; the index follows in memory at once and on disk after
 * `saveDelayMs`, on flush() and on close().
 */
export class Gallery {
  readonly dir: string;
  private readonly store: GalleryStore;
  private readonly options: GalleryOptions;
  private readonly identityOfFace: (faceId: number) => string | undefined;
  private index: VectorIndex | null = null;
  private dirty = false;
  private saveTimer: NodeJS.Timeout | null = null;
  private closed = false;

  /** Use openGallery; this constructor loads or rebuilds the index synchronously. */
  constructor(dir: string, store: GalleryStore, options: GalleryOptions) {
    this.dir = dir;
    this.store = store;
    this.options = options;
    this.identityOfFace = store.identityOfFaceLookup();

    const config = store.config();
    if (config !== null) this.index = this.loadIndex(config.fusedDim);
  }

  /** The gallery's configuration, or null before the first ensureConfig. */
  config(): GalleryConfig | null {
    this.assertOpen();
    return this.store.config();
  }

  /**
   * Stores `c` as the gallery's configuration when it has none, else checks that they agree.
   * Throws gallery_mismatch naming every field that differs with both values.
   */
  ensureConfig(c: GalleryConfig): void {
    this.assertOpen();
    validateConfig(c);

    const stored = this.store.config();
    if (stored === null) {
      this.store.setConfig(c);
      this.index = this.loadIndex(c.fusedDim);
      this.options.logger.info('gallery configured', { dir: this.dir, ...c });
      return;
    }

    const fields = Object.keys(stored) as (keyof GalleryConfig)[];
    const differences = fields.filter((field) => stored[field] !== c[field]);
    if (differences.length > 0) {
      const described = differences
        .map((field) => `${field} is '${stored[field]}' in the gallery but '${c[field]}' here`)
        .join('; ');
      throw new ReidbError(
        'gallery_mismatch',
        `the gallery at ${this.dir} was built with other settings: ${described}`,
        { input: this.dir, details: { gallery: stored, requested: c } },
      );
    }
  }

  /**
   * Enrols faces under `identity` in one transaction, creating the identity when it is new
   * and adding to it otherwise; `metadata`, when given, replaces the identity's metadata.
   * Needs a configuration (ensureConfig). Throws invalid_identity, or invalid_argument for a
   * bad face (wrong dimension, non-finite values, zero fused vector); nothing is stored then.
   */
  enrol(
    identity: string,
    faces: EnrolFace[],
    metadata?: object,
  ): { identity: string; faceIds: number[] } {
    this.assertOpen();
    validateIdentity(identity);
    const config = this.requireConfig();
    validateFaces(faces, config);
    const metadataObject = validateMetadata(metadata);

    const faceIds = this.store.enrol(identity, faces, metadataObject);

    // SQLite has committed; the index follows. Should this fail, SQLite still has the faces
    // and a rebuild restores the index.
    const index = this.index!;
    try {
      index.reserve(faces.length);
      faces.forEach((face, i) => index.add(faceIds[i]!, face.fused));
    } catch (cause) {
      this.options.logger.error('index update failed; rebuilding from SQLite', {
        error: (cause as Error).message,
      });
      this.index = this.rebuildIndex(config.fusedDim);
    }
    this.scheduleSave();

    return { identity, faceIds };
  }

  /**
   * The k gallery faces most similar to `vector` by cosine similarity (approximate, HNSW),
   * best first, keeping only those scoring at least `minScore` (default -1: all). Faces of
   * one identity may appear several times. k must be an integer in 1..1000.
   */
  search(vector: Float32Array, k: number, minScore = -1): Match[] {
    this.assertOpen();
    this.validateQuery(vector, k, minScore);
    if (this.index === null) return [];

    const matches: Match[] = [];
    for (const { label, score } of this.index.search(vector, k)) {
      if (score < minScore) continue;
      const identity = this.identityOfFace(label);
      if (identity === undefined) {
        this.options.logger.warn('index label without a face row', { faceId: label });
        continue;
      }
      matches.push({ identity, faceId: label, score });
    }
    return matches.sort(byScore);
  }

  /**
   * The exact k nearest faces by cosine similarity, by brute force over the fused vectors in
   * SQLite: the reference that HNSW recall is measured against. Linear in the gallery size.
   */
  searchExact(vector: Float32Array, k: number): Match[] {
    return this.searchExactMany([vector], k)[0]!;
  }

  /** searchExact for several queries in one pass over the gallery. */
  searchExactMany(vectors: Float32Array[], k: number): Match[][] {
    this.assertOpen();
    for (const vector of vectors) this.validateQuery(vector, k, -1);
    const queries = vectors.map(normalised);
    const best = queries.map(() => new TopK(k));

    const gallery = new Float32Array(queries[0]?.length ?? 0);
    const bytes = new Uint8Array(gallery.buffer);
    for (const row of this.store.labelledFusedVectors()) {
      if (row.fused.byteLength !== bytes.byteLength) continue;
      bytes.set(row.fused);
      const norm = Math.hypot(...gallery) || 1;
      for (let q = 0; q < queries.length; q++) {
        const score = Math.max(-1, Math.min(1, dot(queries[q]!, gallery) / norm));
        best[q]!.offer(row.faceId, row.identity, score);
      }
    }

    return best.map((top) => top.sorted());
  }

  /**
   * The k identities closest to `vector` by exact cosine similarity, each with its best face,
   * best first, keeping only those scoring at least `minScore`. One pass over every face: the
   * fallback when the approximate index's top faces all belong to a few identities.
   */
  searchIdentitiesExact(vector: Float32Array, k: number, minScore = -1): Match[] {
    this.assertOpen();
    this.validateQuery(vector, k, minScore);
    const query = normalised(vector);
    const best = new Map<string, Match>();

    const gallery = new Float32Array(query.length);
    const bytes = new Uint8Array(gallery.buffer);
    for (const row of this.store.labelledFusedVectors()) {
      if (row.fused.byteLength !== bytes.byteLength) continue;
      bytes.set(row.fused);
      const score = Math.max(-1, Math.min(1, dot(query, gallery) / (Math.hypot(...gallery) || 1)));
      const held = best.get(row.identity);
      if (score >= minScore && (held === undefined || score > held.score)) {
        best.set(row.identity, { identity: row.identity, faceId: row.faceId, score });
      }
    }
    return [...best.values()].sort(byScore).slice(0, k);
  }

  /** An identity with its faces and metadata (never vectors); identity_not_found if absent. */
  getIdentity(identity: string): IdentityRecord {
    this.assertOpen();
    validateIdentity(identity);
    const record = this.store.identity(identity);
    if (record === null) throw notFound(identity);
    return record;
  }

  /** Identities in enrolment order with their number of faces. limit 1..10000, offset >= 0. */
  listIdentities(limit = 100, offset = 0): IdentitySummary[] {
    this.assertOpen();
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
      throw new ReidbError('invalid_argument', 'limit must be an integer in 1..10000', {
        input: String(limit),
      });
    }
    if (!Number.isInteger(offset) || offset < 0) {
      throw new ReidbError('invalid_argument', 'offset must be a non-negative integer', {
        input: String(offset),
      });
    }
    return this.store.listIdentities(limit, offset);
  }

  /**
   * Erases an identity so that nothing of it remains in any file of the gallery: its rows are
   * deleted in one transaction (secure_delete zeroes the freed bytes), the WAL is checkpointed
   * and truncated, the identity's vectors are overwritten with noise inside the index
   * (hnswlib's own delete only flags a vector, leaving its bytes) and the index file is
   * rewritten atomically. Throws identity_not_found, changing nothing, when the identity is
   * not enrolled.
   */
  erase(identity: string): { identity: string; facesRemoved: number } {
    this.assertOpen();
    validateIdentity(identity);

    const faceIds = this.store.erase(identity);
    if (faceIds === null) throw notFound(identity);

    this.store.checkpointTruncate();
    if (this.index !== null) {
      try {
        this.index.remove(faceIds);
      } catch (cause) {
        this.options.logger.error('overwriting erased vectors failed; rebuilding the index', {
          error: (cause as Error).message,
        });
        this.index = this.rebuildIndex(this.index.dim);
      }
      this.saveNow();
    }
    this.options.logger.info('identity erased', { facesRemoved: faceIds.length });

    return { identity, facesRemoved: faceIds.length };
  }

  /**
   * Re-fuses every stored face with another fusion, from the stored appearance and geometry
   * features (no image is read again), then rebuilds and saves the index for the new vectors.
   * The embedder and alignment stay; only the fusion id and fused dimension change.
   */
  refuse(fusion: {
    id: string;
    dim: number;
    fuse(a: Float32Array, g: Float32Array): Float32Array;
  }): { faces: number; fusionId: string } {
    this.assertOpen();
    this.requireConfig();

    const faces = this.store.refuse(fusion.id, fusion.dim, (a, g) => fusion.fuse(a, g));
    this.store.checkpointTruncate();
    this.rebuildAndSave(fusion.dim);
    this.options.logger.info('gallery re-fused', { faces, fusionId: fusion.id });
    return { faces, fusionId: fusion.id };
  }

  stats(): GalleryStats {
    this.assertOpen();
    return {
      ...this.store.counts(),
      indexCount: this.index?.count ?? 0,
      config: this.store.config(),
    };
  }

  /** Saves the index file now if it has unsaved changes. */
  flush(): void {
    this.assertOpen();
    if (this.dirty) this.saveNow();
  }

  /** Saves the index if needed and closes the database. Calling it twice is harmless. */
  close(): void {
    if (this.closed) return;
    try {
      if (this.dirty) this.saveNow();
    } finally {
      this.closed = true;
      if (this.saveTimer !== null) clearTimeout(this.saveTimer);
      try {
        this.store.close();
      } finally {
        this.options.release();
      }
    }
  }

  /**
   * The index for the current SQLite contents: the saved file when it is intact and current;
   * the saved file repaired when SQLite changed after it was written (a crash between commit
   * and save): faces SQLite lacks are overwritten, faces the file lacks are added; a full
   * rebuild when the file is missing or damaged.
   */
  private loadIndex(dim: number): VectorIndex {
    const state = this.store.indexState();
    const loaded = loadIndexFile(this.options.indexDir, dim, this.options.index);
    if ('problem' in loaded) {
      this.options.logger.info('rebuilding index', { reason: loaded.problem });
      return this.rebuildAndSave(dim);
    }

    const { index, meta } = loaded;
    if (
      meta.generation === state.generation &&
      meta.faceCount === state.faceCount &&
      meta.maxFaceId === state.maxFaceId &&
      index.count === state.faceCount
    ) {
      return index;
    }

    // Stale: bring it in step with SQLite. Face ids are never reused, so a label means the
    // same face in both.
    const stored = new Set(this.store.faceIds());
    const indexed = new Set(index.labels());
    const erased = [...indexed].filter((id) => !stored.has(id));
    const missing = [...stored].filter((id) => !indexed.has(id));
    index.remove(erased);
    const vectorOf = this.store.fusedVectorLookup();
    for (const faceId of missing) index.add(faceId, vectorOf(faceId)!);

    this.options.logger.info('index caught up with SQLite', {
      removed: erased.length,
      added: missing.length,
    });
    this.index = index;
    this.saveNow();
    return index;
  }

  private rebuildAndSave(dim: number): VectorIndex {
    this.index = this.rebuildIndex(dim);
    this.saveNow();
    return this.index;
  }

  /** A new index holding every fused vector in SQLite. */
  private rebuildIndex(dim: number): VectorIndex {
    const { faceCount } = this.store.indexState();
    const index = VectorIndex.create(dim, {
      ...this.options.index,
      initialCapacity: Math.max(1024, Math.ceil(faceCount * 1.25)),
    });
    for (const { faceId, fused } of this.store.fusedVectors()) index.add(faceId, fused);
    return index;
  }

  private scheduleSave(): void {
    this.dirty = true;
    if (this.options.saveDelayMs <= 0) {
      this.saveNow();
      return;
    }
    if (this.saveTimer !== null) return;

    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      if (this.closed || !this.dirty) return;
      try {
        this.saveNow();
      } catch (cause) {
        this.options.logger.error('saving the index failed', { error: (cause as Error).message });
      }
    }, this.options.saveDelayMs);
    // A pending save must not keep the process alive; the next open repairs a missed one.
    this.saveTimer.unref();
  }

  private saveNow(): void {
    if (this.saveTimer !== null) {
      clearTimeout(this.saveTimer);
      this.saveTimer = null;
    }
    if (this.index === null) return;

    const state: IndexState = this.store.indexState();
    this.index.save(this.options.indexDir, state);
    this.dirty = false;
  }

  private requireConfig(): GalleryConfig {
    const config = this.store.config();
    if (config === null || this.index === null) {
      throw new ReidbError(
        'invalid_argument',
        `the gallery at ${this.dir} has no configuration yet; call ensureConfig before enrol`,
        { input: this.dir },
      );
    }
    return config;
  }

  private validateQuery(vector: Float32Array, k: number, minScore: number): void {
    if (!Number.isInteger(k) || k < 1 || k > MAX_K) {
      throw new ReidbError('invalid_argument', `k must be an integer in 1..${MAX_K}`, {
        input: String(k),
        details: { max: MAX_K },
      });
    }
    if (!(minScore >= -1 && minScore <= 1)) {
      throw new ReidbError('invalid_argument', 'minScore must be in [-1, 1]', {
        input: String(minScore),
      });
    }
    if (!(vector instanceof Float32Array)) {
      throw new ReidbError('invalid_argument', 'query vector must be a Float32Array', {
        input: 'vector',
      });
    }
    // The index exists exactly when the gallery has a config; its dim is the fused dim.
    const dim = this.index?.dim;
    if (dim !== undefined && vector.length !== dim) {
      throw new ReidbError(
        'invalid_argument',
        `query vector has ${vector.length} dimensions; the gallery's fused vectors have ${dim}`,
        { input: 'vector', details: { expected: dim, got: vector.length } },
      );
    }
    if (!isUsableVector(vector)) {
      throw new ReidbError('invalid_argument', 'query vector must be finite and non-zero', {
        input: 'vector',
      });
    }
  }

  private assertOpen(): void {
    if (this.closed) {
      throw new ReidbError('invalid_argument', `the gallery at ${this.dir} is closed`, {
        input: this.dir,
      });
    }
  }
}

function notFound(identity: string): ReidbError {
  return new ReidbError('identity_not_found', `no identity '${identity}' in the gallery`, {
    input: identity,
  });
}

function validateConfig(c: GalleryConfig): void {
  const problems: string[] = [];
  if (typeof c.embedderId !== 'string' || c.embedderId.length === 0) problems.push('embedderId');
  if (typeof c.fusionId !== 'string' || c.fusionId.length === 0) problems.push('fusionId');
  if (!Number.isInteger(c.appearanceDim) || c.appearanceDim < 1) problems.push('appearanceDim');
  if (!Number.isInteger(c.fusedDim) || c.fusedDim < 1) problems.push('fusedDim');
  if (c.alignMode !== 'mesh' && c.alignMode !== 'raw') problems.push('alignMode');
  if (problems.length > 0) {
    throw new ReidbError('invalid_argument', `invalid gallery config: ${problems.join(', ')}`, {
      input: problems.join(', '),
    });
  }
}

function validateFaces(faces: EnrolFace[], config: GalleryConfig): void {
  if (!Array.isArray(faces) || faces.length === 0 || faces.length > MAX_FACES_PER_ENROLMENT) {
    throw new ReidbError(
      'invalid_argument',
      `an enrolment needs 1..${MAX_FACES_PER_ENROLMENT} faces`,
      { input: 'faces', details: { max: MAX_FACES_PER_ENROLMENT } },
    );
  }

  faces.forEach((face, i) => {
    const fail = (field: string, why: string): never => {
      throw new ReidbError('invalid_argument', `faces[${i}].${field} ${why}`, {
        input: `faces[${i}].${field}`,
      });
    };
    if (typeof face.source !== 'string' || face.source.length === 0 || face.source.length > 1024) {
      fail('source', 'must be a string of 1..1024 characters');
    }
    const camera: unknown = face.camera;
    if (camera !== undefined && (typeof camera !== 'string' || camera.length > 256)) {
      fail('camera', 'must be a string of at most 256 characters');
    }
    if (
      face.capturedAt !== undefined &&
      (typeof face.capturedAt !== 'string' || Number.isNaN(Date.parse(face.capturedAt)))
    ) {
      fail('capturedAt', 'must be an ISO-8601 date-time');
    }

    const numbers: [string, unknown][] = [
      ['box.x', face.box?.x],
      ['box.y', face.box?.y],
      ['box.width', face.box?.width],
      ['box.height', face.box?.height],
      ['pose.yaw', face.pose?.yaw],
      ['pose.pitch', face.pose?.pitch],
      ['pose.roll', face.pose?.roll],
      ['quality', face.quality],
      ['detectorScore', face.detectorScore],
      ['meshScore', face.meshScore],
    ];
    for (const [field, value] of numbers) {
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        fail(field, 'must be a finite number');
      }
    }

    const vectors: [string, unknown, number | null][] = [
      ['appearance', face.appearance, config.appearanceDim],
      ['geometry', face.geometry, null],
      ['fused', face.fused, config.fusedDim],
    ];
    for (const [field, value, dim] of vectors) {
      if (!(value instanceof Float32Array)) fail(field, 'must be a Float32Array');
      const vector = value as Float32Array;
      if (dim !== null && vector.length !== dim) {
        fail(field, `has ${vector.length} dimensions; the gallery expects ${dim}`);
      }
      if (!isUsableVector(vector)) fail(field, 'must be finite and non-zero');
    }
  });
}

function validateMetadata(metadata: object | undefined): Record<string, unknown> | undefined {
  if (metadata === undefined) return undefined;
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
    throw new ReidbError('invalid_argument', 'metadata must be a JSON object', {
      input: 'metadata',
    });
  }
  const json = JSON.stringify(metadata);
  if (Buffer.byteLength(json) > MAX_METADATA_BYTES) {
    throw new ReidbError(
      'invalid_argument',
      `metadata is ${Buffer.byteLength(json)} bytes of JSON; at most ${MAX_METADATA_BYTES}`,
      { input: 'metadata', details: { max: MAX_METADATA_BYTES } },
    );
  }
  return JSON.parse(json) as Record<string, unknown>;
}

function isUsableVector(vector: Float32Array): boolean {
  let sum = 0;
  for (const value of vector) {
    if (!Number.isFinite(value)) return false;
    sum += value * value;
  }
  return sum > 0;
}

function normalised(vector: Float32Array): Float64Array {
  const norm = Math.hypot(...vector);
  return Float64Array.from(vector, (value) => value / norm);
}

function dot(a: Float64Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

function byScore(a: Match, b: Match): number {
  return b.score - a.score || a.faceId - b.faceId;
}

/** The k best matches seen so far, kept sorted; k <= 1000 so insertion is cheap. */
class TopK {
  private readonly items: Match[] = [];

  constructor(private readonly k: number) {}

  offer(faceId: number, identity: string, score: number): void {
    if (this.items.length === this.k && score <= this.items[this.k - 1]!.score) return;
    const match = { identity, faceId, score };
    let i = this.items.length;
    while (i > 0 && byScore(match, this.items[i - 1]!) < 0) i--;
    this.items.splice(i, 0, match);
    if (this.items.length > this.k) this.items.pop();
  }

  sorted(): Match[] {
    return this.items;
  }
}
