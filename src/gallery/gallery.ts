import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';

import { ReidbError } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import { DEPLOYMENT_FILE, openDeployment, type Deployment } from '../policy/deployment.ts';
import { formatDuration } from '../policy/duration.ts';
import { MAX_DURATION_SECONDS } from '../policy/duration.ts';
import { findInvisible, validateIdentity } from './identity.ts';
import { acquireGalleryLock } from './lock.ts';
import {
  GalleryStore,
  type EnrolFace,
  type ExpiredFace,
  type GalleryConfig,
  type GalleryPolicy,
  type IdentityPolicy,
  type IdentityRecord,
  type IndexState,
  type StoredFace,
} from './store.ts';
import {
  loadIndexFile,
  removeTemporaryIndexFiles,
  VectorIndex,
  type VectorIndexOptions,
} from './vector-index.ts';

export type {
  EnrolFace,
  ExpiredFace,
  FaceRecord,
  GalleryConfig,
  GalleryPolicy,
  IdentityPolicy,
  IdentityRecord,
  StoredFace,
} from './store.ts';

/** The SQLite file inside a gallery directory (WAL files sit beside it). */
export const DATABASE_FILE = 'gallery.sqlite';

/** Largest k a search accepts. */
export const MAX_K = 1000;

/** Most faces one enrol call accepts. */
export const MAX_FACES_PER_ENROLMENT = 1000;

/** Largest identity metadata, in bytes of JSON. */
export const MAX_METADATA_BYTES = 64 * 1024;

/** Longest legal basis or purpose text, in characters. */
export const MAX_POLICY_TEXT = 1000;

/** Longest keep-for: 100 years, in seconds; the longest duration parseDuration accepts. */
export const MAX_KEEP_FOR_SECONDS = MAX_DURATION_SECONDS;

/** Who did an erasure and why, for the erasure ledger. */
export interface ErasureOptions {
  /** Audit actor: `key:<id>`, `cli:<user>`, `system:retention`. Default 'unknown'. */
  actor?: string;
  /** Default 'erase'. */
  reason?: 'erase' | 'retention';
}

/** What an erasure removed. */
export interface ErasureResult {
  /** Faces removed. */
  faceIds: number[];
  /** Identities removed whole (their last face went). */
  identities: string[];
  /**
   * False when another connection kept a WAL from being truncated: the erasure is done, but
   * old page images stay in the -wal file until the next checkpoint (logged as an error).
   */
  walTruncated: boolean;
}

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
  /**
   * Accept a gallery whose deployment.sqlite is missing or another one, linking it to the
   * one found (or a new one). Every erasure recorded only in the lost file is forgotten, so
   * faces it erased could come back from older copies: restore deployment.sqlite instead
   * whenever it exists.
   */
  acceptNewDeployment?: boolean;
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
      // A new gallery folder is its owner's alone; an existing one keeps its mode.
      mkdirSync(folder, { recursive: true, mode: 0o700 });
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
  let deployment: Deployment | null = null;
  try {
    const leftovers = removeTemporaryIndexFiles(indexDir);
    if (leftovers.length > 0) logger.warn('removed unfinished index files', { files: leftovers });

    store = GalleryStore.open(path.join(dir, DATABASE_FILE), {
      migrationsDir: options.migrationsDir,
      logger,
    });
    deployment = linkDeployment(dir, store, options.acceptNewDeployment === true, logger);
    const gallery = new Gallery(dir, store, deployment, {
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
    deployment?.close();
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
 * `saveDelayMs`, on flush() and on close(). Its `deployment` (deployment.sqlite in the same
 * directory) holds the keys, the audit trail and the erasure ledger, which outlive any
 * restore of the gallery's own data.
 */
export class Gallery {
  readonly dir: string;
  readonly deployment: Deployment;
  private readonly store: GalleryStore;
  private readonly options: GalleryOptions;
  private readonly identityOfFace: (faceId: number) => string | undefined;
  private index: VectorIndex | null = null;
  /** When each identity was last erased in this process (ms), for enrol's erasure fence. */
  private readonly erasedAt = new Map<string, number>();
  private dirty = false;
  private saveTimer: NodeJS.Timeout | null = null;
  private closed = false;

  /** Use openGallery; this constructor loads or rebuilds the index synchronously. */
  constructor(dir: string, store: GalleryStore, deployment: Deployment, options: GalleryOptions) {
    this.dir = dir;
    this.store = store;
    this.deployment = deployment;
    this.options = options;
    this.identityOfFace = store.identityOfFaceLookup();

    // Before the index loads, so that it never holds a face the ledger says is erased.
    this.reapplyLedger();
    // An erasure cut short after its delete but before its truncation left old page images
    // in a WAL: remove them now, not at the next erasure or close.
    this.truncateWals();

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
   * `policy` (keep-for in seconds, legal basis, purpose) is recorded for a new identity; for
   * an existing one it may only repeat what is recorded (see checkPolicyAtEnrolment).
   * `startedAt` (a performance.now() reading, ms) is when the caller's request began: an
   * erasure of the identity acknowledged since then makes this a conflict. Needs a configuration (ensureConfig). Throws
   * invalid_identity, conflict, or invalid_argument for a bad face (wrong dimension,
   * non-finite values, zero fused vector) or policy field; nothing is stored then.
   */
  enrol(
    identity: string,
    faces: EnrolFace[],
    metadata?: object,
    policy?: IdentityPolicy,
    options: { startedAt?: number } = {},
  ): { identity: string; faceIds: number[]; faceUids: string[] } {
    this.assertOpen();
    validateIdentity(identity);
    const config = this.requireConfig();
    validateFaces(faces, config);
    const metadataObject = validateMetadata(metadata);
    const policyFields = validateIdentityPolicy(policy ?? {});
    this.checkPolicyAtEnrolment(identity, policyFields);

    // An erasure acknowledged while this enrolment's images were being analysed wins: the
    // enrolment must not bring the person back. Erasures are remembered for
    // ERASURE_FENCE_MS, so an enrolment older than that is refused outright.
    if (
      options.startedAt !== undefined &&
      performance.now() - options.startedAt > ERASURE_FENCE_MS
    ) {
      throw new ReidbError(
        'conflict',
        `this enrolment of '${identity}' began more than ${ERASURE_FENCE_MS / 60_000} minutes ` +
          'ago; nothing was stored. Send it again',
        { input: identity },
      );
    }
    const erasedAt = this.erasedAt.get(identity);
    if (
      erasedAt !== undefined &&
      options.startedAt !== undefined &&
      erasedAt >= options.startedAt
    ) {
      throw new ReidbError(
        'conflict',
        `identity '${identity}' was erased while this enrolment was running; nothing was ` +
          'stored. Send the enrolment again to enrol the person anew',
        { input: identity },
      );
    }

    const { faceIds, faceUids } = this.store.enrol(identity, faces, metadataObject, policyFields);

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

    return { identity, faceIds, faceUids };
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
   * Erases an identity from every file of the gallery. In order: its face uids go into the
   * erasure ledger (deployment.sqlite), so that a crash part-way, a restored backup or a
   * re-imported export is cleaned at the next open; its export key is destroyed, which makes
   * its records in earlier exports unreadable; its rows are deleted in one transaction
   * (secure_delete zeroes the freed bytes); its vectors are overwritten with noise inside the
   * index (hnswlib's own delete only flags a vector, leaving its bytes) and the index file is
   * rewritten atomically; both WALs are checkpointed and truncated (walTruncated false when a
   * reader held one up). Throws identity_not_found, changing nothing, when the identity is
   * not enrolled.
   */
  erase(
    identity: string,
    options: ErasureOptions = {},
  ): { identity: string; facesRemoved: number; identityRef: string; walTruncated: boolean } {
    this.assertOpen();
    validateIdentity(identity);

    const uids = this.store.faceUidsOf(identity);
    if (uids.length === 0 && this.store.identity(identity) === null) throw notFound(identity);

    const identityRef = this.deployment.identityRef(identity);
    const removed = this.eraseFaces(uids, options, [identity]);
    this.options.logger.info('identity erased', { facesRemoved: removed.faceIds.length });
    this.noteErasure(identity);

    return {
      identity,
      facesRemoved: removed.faceIds.length,
      identityRef,
      walTruncated: removed.walTruncated,
    };
  }

  /**
   * Erases faces by uid as erase() does (ledger first, secure delete, WAL truncation, index
   * overwrite, export keys destroyed), removing every identity left with no face. The
   * retention job's way in. `alsoIdentities` names identities to remove even when they have
   * no face left to erase (an identity enrolled with none cannot exist, but a crash can leave
   * one). Unknown uids are ignored.
   */
  eraseFaces(
    uids: string[],
    options: ErasureOptions = {},
    alsoIdentities: string[] = [],
  ): ErasureResult {
    this.assertOpen();
    const actor = options.actor ?? 'unknown';
    const reason = options.reason ?? 'erase';

    // The ledger first: once it holds the uids, nothing can bring these faces back.
    const owners = this.store.identitiesOfFaceUids(uids);
    for (const [identity, faceUids] of owners) {
      const identityRef = this.deployment.identityRef(identity);
      this.deployment.ledger.record({ identityRef, faceUids, reason, actor });
    }

    // An identity that goes whole has its export key destroyed before its rows go, so no
    // failure below can leave earlier exports of it readable. One that keeps some faces
    // (retention took its oldest) keeps its key, so that a backup still restores the faces
    // that were not due; the ledger keeps the expired ones out of any restore.
    const whole = [...owners]
      .filter(([identity, faceUids]) => this.store.faceUidsOf(identity).length === faceUids.length)
      .map(([identity]) => identity);
    for (const identity of new Set([...whole, ...alsoIdentities])) {
      this.deployment.exportKeys.destroy(this.deployment.identityRef(identity));
    }

    const removed = this.store.eraseFacesByUid(uids);
    for (const identity of alsoIdentities) {
      if (this.store.erase(identity) !== null) removed.identities.push(identity);
    }
    this.overwriteInIndex(removed.faceIds);

    // The WAL truncations last: a reader holding one up delays the removal of old page images,
    // never the erasure itself, which is reported done with walTruncated false.
    const walTruncated = this.truncateWals();

    return {
      faceIds: removed.faceIds,
      identities: [...new Set(removed.identities)],
      walTruncated,
    };
  }

  /** The gallery's policy: keep-for, legal basis, purpose, thumbnails. */
  policy(): GalleryPolicy {
    this.assertOpen();
    return this.store.policy();
  }

  /**
   * Changes the gallery's policy: each field given replaces the stored one (null clears
   * keep-for, legal basis or purpose). A shorter keep-for applies to faces already stored at
   * the next retention run. Throws invalid_argument naming a bad field.
   */
  setPolicy(patch: Partial<Omit<GalleryPolicy, 'updatedAt'>>): GalleryPolicy {
    const { fields, thumbnails } = this.checkPolicy(patch);
    return this.store.setPolicy({ ...fields, ...(thumbnails ? { thumbnails } : {}) });
  }

  /** Checks a policy change as setPolicy would, storing nothing; returns the checked fields. */
  checkPolicy(patch: Partial<Omit<GalleryPolicy, 'updatedAt'>>): {
    fields: IdentityPolicy;
    thumbnails?: GalleryPolicy['thumbnails'];
  } {
    this.assertOpen();
    const fields = validateIdentityPolicy(patch);
    const thumbnails = patch.thumbnails;
    if (thumbnails !== undefined && !['off', 'on', 'blurred'].includes(thumbnails)) {
      throw new ReidbError('invalid_argument', `thumbnails must be off, on or blurred`, {
        input: 'thumbnails',
      });
    }
    const unknown = Object.keys(patch).filter(
      (key) => !['keepForSeconds', 'legalBasis', 'purpose', 'thumbnails'].includes(key),
    );
    if (unknown.length > 0) {
      throw new ReidbError('invalid_argument', `unknown policy field ${unknown[0]}`, {
        input: unknown[0],
      });
    }
    return { fields, thumbnails };
  }

  /** Faces due for erasure under the retention policy at `now` (default: now), oldest first. */
  expiredFaces(now: Date = new Date()): ExpiredFace[] {
    this.assertOpen();
    return this.store.expiredFaces(now);
  }

  /**
   * Everything the gallery holds about an identity, vectors and thumbnails included: for
   * subject access and exports. identity_not_found if absent.
   */
  identityData(identity: string): { record: IdentityRecord; faces: StoredFace[] } {
    const record = this.getIdentity(identity);
    return { record, faces: this.store.identityFaceData(identity) };
  }

  /** Labels of every identity, in enrolment order. */
  identityLabels(): string[] {
    this.assertOpen();
    return this.store.identityLabels();
  }

  /**
   * Checks what enrol() would check of an identity, without storing anything: the label, the
   * metadata (a JSON object of at most 64 KiB) and the policy fields (valid, not changing an
   * existing identity's, keep-for not above the gallery's). Throws the error enrol would.
   */
  checkIdentityFields(identity: string, metadata?: object, policy?: IdentityPolicy): void {
    this.assertOpen();
    validateIdentity(identity);
    validateMetadata(metadata);
    this.checkPolicyAtEnrolment(identity, validateIdentityPolicy(policy ?? {}));
  }

  /**
   * Checks faces as enrol() would (dimensions, finite values, uid and enrolment time of
   * imported faces) without storing anything, against `config` when given (a gallery not yet
   * configured) and the gallery's own otherwise; throws invalid_argument naming the field.
   */
  checkFaces(faces: EnrolFace[], config?: GalleryConfig): void {
    this.assertOpen();
    validateFaces(faces, config ?? this.requireConfig());
  }

  /** Checks a configuration as ensureConfig would, without storing it. */
  checkConfig(c: GalleryConfig): void {
    validateConfig(c);
  }

  /** Which of these face uids the gallery holds. */
  heldFaceUids(uids: string[]): Set<string> {
    this.assertOpen();
    return this.store.heldFaceUids(uids);
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
        this.deployment.close();
      } finally {
        this.options.release();
      }
    }
  }

  /**
   * Deletes every face the erasure ledger lists: the gallery.sqlite may be a copy restored
   * from before an erasure, or a crash may have stopped an erasure after its ledger entry.
   * The index, loaded after this, catches up with SQLite and overwrites their vectors.
   */
  private reapplyLedger(): void {
    const erased = [...this.deployment.ledger.erasedAmong(this.store.allFaceUids())];
    if (erased.length === 0) return;

    // As eraseFaces does: keys of identities that go whole first, then the rows, then the
    // audit rows. The WALs are truncated by the caller, guarded (a busy reader must not fail
    // the open half-way, leaving the rest undone).
    const owners = this.store.identitiesOfFaceUids(erased);
    for (const [identity, faceUids] of owners) {
      if (this.store.faceUidsOf(identity).length === faceUids.length) {
        this.deployment.exportKeys.destroy(this.deployment.identityRef(identity));
      }
    }
    const removed = this.store.eraseFacesByUid(erased);
    for (const [identity, faceUids] of owners) {
      this.deployment.audit.append({
        actor: 'system:open',
        action: 'erasure_reapplied',
        identityRef: this.deployment.identityRef(identity),
        details: { faces: faceUids.length, identityRemoved: removed.identities.includes(identity) },
      });
    }
    this.options.logger.warn('erasure ledger re-applied: the gallery held erased faces', {
      faces: removed.faceIds.length,
      identities: owners.size,
    });
  }

  /**
   * Checkpoints and truncates the WAL of both databases, so that no page image of erased rows
   * stays in a -wal file. Returns false (and logs) when another connection held one up: the
   * old pages then stay in the files until the next checkpoint (an erasure, an open, a close).
   */
  private truncateWals(): boolean {
    let truncated = true;
    for (const database of [this.store, this.deployment]) {
      try {
        database.checkpointTruncate();
      } catch (error) {
        truncated = false;
        this.options.logger.error('erased data stays in the database files until a checkpoint', {
          error: (error as Error).message,
        });
      }
    }
    return truncated;
  }

  /** Records an erasure for enrol's fence; forgets those older than any request can run. */
  private noteErasure(identity: string): void {
    // A monotonic clock: a wall-clock step back must not let an older enrolment through.
    const now = performance.now();
    this.erasedAt.set(identity, now);
    for (const [label, at] of this.erasedAt) {
      if (now - at > ERASURE_FENCE_MS) this.erasedAt.delete(label);
    }
  }

  /**
   * An identity's keep-for, legal basis and purpose are recorded once (its Art. 30 record):
   * a later enrolment may repeat a recorded field, or record one not recorded yet, but not
   * change it, so that no enrolment can lengthen anyone's retention or shorten one already
   * set. An identity's keep-for may not exceed the gallery's (it only ever shortens).
   */
  private checkPolicyAtEnrolment(identity: string, policy: IdentityPolicy): void {
    const galleryKeep = this.store.policy().keepForSeconds;
    const keep = policy.keepForSeconds;
    if (keep !== undefined && keep !== null && galleryKeep !== null && keep > galleryKeep) {
      throw new ReidbError(
        'invalid_argument',
        `keep-for ${formatDuration(keep)} is longer than the gallery's ` +
          `${formatDuration(galleryKeep)}; an identity may ` +
          'only be kept for less',
        { input: 'keepFor' },
      );
    }

    const stored = this.store.identity(identity)?.policy;
    if (stored === undefined) return;
    for (const field of ['keepForSeconds', 'legalBasis', 'purpose'] as const) {
      // A field not recorded yet may be recorded now (an identity created without it); one
      // that is recorded never changes.
      const value = policy[field];
      if (value !== undefined && stored[field] !== null && value !== stored[field]) {
        throw new ReidbError(
          'invalid_argument',
          `identity '${identity}' already exists with ${field} ` +
            `${field === 'keepForSeconds' ? formatDuration(stored[field] as number) : JSON.stringify(stored[field])}; ` +
            'once recorded for an identity it cannot be changed by an enrolment',
          { input: field },
        );
      }
    }
  }

  /** Overwrites erased faces' vectors in the index and saves it; rebuilds it on failure. */
  private overwriteInIndex(faceIds: number[]): void {
    if (this.index === null || faceIds.length === 0) return;
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
      throw new ReidbError('closed', `the gallery at ${this.dir} is closed`, {
        input: this.dir,
      });
    }
  }
}

/**
 * Opens the deployment of the gallery in `dir` and checks that it is the one the gallery was
 * linked to: a linked gallery whose deployment.sqlite is missing or another one is refused
 * (gallery_corrupt, gallery_mismatch) unless `accept`, since a new ledger would not know the
 * erasures already made. An unlinked gallery (new, or from before links) is linked now.
 */
function linkDeployment(
  dir: string,
  store: GalleryStore,
  accept: boolean,
  logger: Logger,
): Deployment {
  const linked = store.deploymentLink();
  const file = path.join(dir, DEPLOYMENT_FILE);
  // Unlinked but already on schema 2 before this open: a gallery from before links that
  // had a deployment (schema 2 made it one), so a missing file is a lost ledger too.
  const hadDeployment = linked !== null || !store.migratedNow.includes(2);
  if (hadDeployment && !existsSync(file) && !accept) {
    throw new ReidbError(
      'gallery_corrupt',
      `the gallery at ${dir} belongs to deployment ${linked ?? '(not recorded)'}, but ${file} ` +
        'is missing. It holds ' +
        'the erasure ledger: restore it from its backup. Only if it is lost for good, open the ' +
        'gallery with --new-deployment (erasures recorded only there are forgotten)',
      { input: file },
    );
  }

  // An empty file in its place would be made into a new deployment: refuse before that.
  if (linked !== null && !accept && existsSync(file) && statSync(file).size === 0) {
    throw new ReidbError(
      'gallery_corrupt',
      `${file} is empty, but the gallery at ${dir} belongs to deployment ${linked}: restore ` +
        'its deployment.sqlite from its backup',
      { input: file },
    );
  }

  const deployment = openDeployment(dir, { logger });
  if (linked !== null && linked !== deployment.id) {
    if (!accept) {
      deployment.close();
      throw new ReidbError(
        'gallery_mismatch',
        `${file} is deployment ${deployment.id}, but the gallery at ${dir} belongs to ` +
          `deployment ${linked}: put its own deployment.sqlite back, or open it with ` +
          '--new-deployment to accept this one (erasures recorded only in the other are forgotten)',
        { input: file, details: { gallery: linked, deployment: deployment.id } },
      );
    }
    logger.warn('gallery linked to another deployment', { from: linked, to: deployment.id });
  }
  if (linked !== deployment.id) store.setDeploymentLink(deployment.id);
  return deployment;
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

/** How long an erasure fences off enrolments of the same label that started before it, ms. */
const ERASURE_FENCE_MS = 10 * 60 * 1000;

/** A face uid as reidb makes them: 16 random bytes in hex. */
const FACE_UID = /^[0-9a-f]{32}$/;

/** An enrolment time as reidb writes them (Date.toISOString). */
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;

/** How far in the future an imported enrolment time may be: clocks differ a little. */
const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;

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
    // Only an import sets these; they decide erasure (the ledger) and retention.
    if (face.uid !== undefined && (typeof face.uid !== 'string' || !FACE_UID.test(face.uid))) {
      fail('uid', 'must be 32 lower-case hex digits');
    }
    if (face.enrolledAt !== undefined) {
      const at = typeof face.enrolledAt === 'string' ? Date.parse(face.enrolledAt) : NaN;
      if (!ISO_UTC.test(String(face.enrolledAt)) || Number.isNaN(at)) {
        fail('enrolledAt', 'must be an ISO-8601 UTC date-time (2024-05-01T10:00:00.000Z)');
      }
      if (at > Date.now() + MAX_CLOCK_SKEW_MS) fail('enrolledAt', 'must not be in the future');
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

/**
 * Checks a legal basis or purpose text: 1..1000 characters, not only white space, no control
 * characters. Returns it; throws invalid_argument naming `input` (a field or a flag).
 */
export function checkPolicyText(value: unknown, input: string): string {
  if (
    typeof value !== 'string' ||
    value.trim().length === 0 ||
    value.length > MAX_POLICY_TEXT ||
    /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/u.test(value) ||
    findInvisible(value) !== null
  ) {
    throw new ReidbError(
      'invalid_argument',
      `${input} must be text of 1..${MAX_POLICY_TEXT} characters without control, ` +
        'bidirectional control or invisible characters',
      { input },
    );
  }
  return value;
}

/** Checks the policy fields of an enrolment or a policy change; returns those given. */
function validateIdentityPolicy(policy: IdentityPolicy): IdentityPolicy {
  const out: IdentityPolicy = {};
  const keep = policy.keepForSeconds;
  if (keep !== undefined) {
    if (keep !== null && (!Number.isInteger(keep) || keep < 1 || keep > MAX_KEEP_FOR_SECONDS)) {
      throw new ReidbError(
        'invalid_argument',
        `keep-for must be a whole number of seconds from 1 to ${MAX_KEEP_FOR_SECONDS} (100 years)`,
        { input: 'keepFor' },
      );
    }
    out.keepForSeconds = keep;
  }
  for (const field of ['legalBasis', 'purpose'] as const) {
    const value: unknown = policy[field];
    if (value === undefined) continue;
    out[field] = value === null ? null : checkPolicyText(value, field);
  }
  return out;
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
