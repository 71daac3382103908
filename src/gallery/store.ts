import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';

import Database from 'better-sqlite3';

import { ReidbError } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { Box, HeadPose } from '../types.ts';
import { applyMigrations, DEFAULT_MIGRATIONS_DIR } from './migrations.ts';

/** What a gallery was built with; fixed by the first enrolment. */
export interface GalleryConfig {
  embedderId: string;
  appearanceDim: number;
  fusionId: string;
  fusedDim: number;
  alignMode: 'mesh' | 'raw';
}

/** One face to enrol. Vectors are float32; `fused` is what the index searches. */
export interface EnrolFace {
  /** File name or upload name the face came from. */
  source: string;
  camera?: string;
  /** ISO-8601 time the image was taken, when known. */
  capturedAt?: string;
  /** Pixels of the source image. */
  box: Box;
  /** Degrees. */
  pose: HeadPose;
  /** In [0, 1]. */
  quality: number;
  /** In [0, 1]. */
  detectorScore: number;
  /** In [0, 1]. */
  meshScore: number;
  appearance: Float32Array;
  geometry: Float32Array;
  fused: Float32Array;
  /** JPEG of the face box, stored only when the gallery's policy asks for thumbnails. */
  thumbnail?: Buffer;
  /** Set by an import only: the face's uid and enrolment time in the gallery it came from. */
  uid?: string;
  enrolledAt?: string;
}

/** What the gallery records about itself (Art. 30): one policy for all its identities. */
export interface GalleryPolicy {
  /** Faces expire this long after their enrolment; null keeps them until erased. Seconds. */
  keepForSeconds: number | null;
  legalBasis: string | null;
  purpose: string | null;
  /** Whether enrolment stores a thumbnail of the face box, and whether it is blurred. */
  thumbnails: 'off' | 'on' | 'blurred';
  updatedAt: string;
}

/** What an enrolment may record for its identity; each field overrides the gallery's. */
export interface IdentityPolicy {
  /** Seconds; null or absent: the gallery's policy decides. */
  keepForSeconds?: number | null;
  legalBasis?: string | null;
  purpose?: string | null;
}

/** A face that the retention policy says is due for erasure. */
export interface ExpiredFace {
  identity: string;
  faceId: number;
  uid: string;
  enrolledAt: string;
  /** When it expired: enrolledAt + keep-for, ISO-8601. */
  expiredAt: string;
}

/** A stored face as reported to callers: never its vectors. */
export interface FaceRecord {
  faceId: number;
  /** Random id of the face, stable across backups and exports (see the erasure ledger). */
  uid: string;
  source: string;
  camera: string | null;
  capturedAt: string | null;
  enrolledAt: string;
  box: Box;
  pose: HeadPose;
  quality: number;
  detectorScore: number;
  meshScore: number;
  /** Whether a thumbnail is stored for the face. */
  thumbnail: boolean;
}

export interface IdentityRecord {
  identity: string;
  createdAt: string;
  metadata: Record<string, unknown>;
  /** What the enrolment recorded for this identity; null fields follow the gallery policy. */
  policy: { keepForSeconds: number | null; legalBasis: string | null; purpose: string | null };
  faces: FaceRecord[];
}

/** A stored face with everything kept about it: for subject access and exports. */
export interface StoredFace extends EnrolFace {
  faceId: number;
  uid: string;
  enrolledAt: string;
}

/** What the index file should hold, kept by triggers in step with the faces table. */
export interface IndexState {
  /** Bumped by every face inserted or deleted. */
  generation: number;
  faceCount: number;
  /** Largest face id present; 0 when there are none. */
  maxFaceId: number;
}

export interface GalleryStoreOptions {
  /** Folder of NNN_name.sql files; default the repository's migrations/. */
  migrationsDir?: string;
  /** Default silentLogger. */
  logger?: Logger;
  /** How long a statement waits for another connection's lock, in ms; default 5000. */
  busyTimeoutMs?: number;
}

const CONFIG_KEYS = {
  embedderId: 'embedder_id',
  appearanceDim: 'appearance_dim',
  fusionId: 'fusion_id',
  fusedDim: 'fused_dim',
  alignMode: 'align_mode',
} as const satisfies Record<keyof GalleryConfig, string>;

interface FaceRow {
  id: number;
  uid: string;
  source: string;
  camera: string | null;
  captured_at: string | null;
  enrolled_at: string;
  box_x: number;
  box_y: number;
  box_w: number;
  box_h: number;
  yaw: number;
  pitch: number;
  roll: number;
  quality: number;
  detector_score: number;
  mesh_score: number;
  has_thumbnail: number;
}

/**
 * The pragmas of every reidb database (gallery.sqlite, deployment.sqlite): WAL journal;
 * foreign keys on; secure_delete on, so deleted rows and freed pages are overwritten with
 * zeros (checked: a build without it is refused); synchronous FULL, so an acknowledged write
 * survives power loss; trusted_schema off. Throws a plain Error for the caller to wrap.
 */
export function setPragmas(db: Database.Database, busyTimeoutMs: number): void {
  db.pragma(`busy_timeout = ${busyTimeoutMs}`);
  const mode = db.pragma('journal_mode = WAL', { simple: true });
  if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, not wal`);
  db.pragma('foreign_keys = ON');
  db.pragma('secure_delete = ON');
  if (db.pragma('secure_delete', { simple: true }) !== 1) {
    throw new Error('this SQLite build does not allow secure_delete');
  }
  db.pragma('synchronous = FULL');
  db.pragma('trusted_schema = OFF');
}

/** The bytes of a float32 array, without copying, for a BLOB column. */
export function float32ToBlob(vector: Float32Array): Buffer {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
}

/** A float32 array copied out of a BLOB column (a copy, so alignment never matters). */
export function blobToFloat32(blob: Buffer): Float32Array {
  const out = new Float32Array(blob.byteLength / 4);
  new Uint8Array(out.buffer).set(blob);
  return out;
}

/**
 * The SQLite half of a gallery: schema, configuration, identities and faces. It knows nothing
 * of the HNSW index; it is the source of truth the index is derived from. All methods are
 * synchronous (better-sqlite3) and each write is one transaction.
 */
export class GalleryStore {
  readonly db: Database.Database;
  readonly file: string;

  /** Schema versions this open applied (empty when the schema was already current). */
  readonly migratedNow: number[];

  private constructor(db: Database.Database, file: string, migratedNow: number[]) {
    this.db = db;
    this.file = file;
    this.migratedNow = migratedNow;
  }

  /**
   * Opens (creating when needed) the SQLite file, sets the pragmas and applies pending
   * migrations. Pragmas: WAL journal; foreign keys on (faces cascade with their identity);
   * secure_delete on, so deleted rows and freed pages are overwritten with zeros;
   * synchronous FULL, so an acknowledged enrolment or erasure survives power loss (NORMAL
   * could lose the last transactions in WAL mode, and gallery writes are rare enough that
   * the extra fsync does not matter).
   */
  static open(file: string, options: GalleryStoreOptions = {}): GalleryStore {
    const logger = options.logger ?? silentLogger;
    let db: Database.Database;
    try {
      // Biometric data: a new database is its owner's alone (SQLite gives the -wal and -shm
      // files the database file's mode).
      if (!existsSync(file)) closeSync(openSync(file, 'wx', 0o600));
      db = new Database(file);
    } catch (cause) {
      throw new ReidbError('gallery_corrupt', `cannot open the gallery database ${file}`, {
        input: file,
        cause,
      });
    }

    let migratedNow: number[] = [];
    try {
      setPragmas(db, options.busyTimeoutMs ?? 5000);

      migratedNow = applyMigrations(db, options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR, logger);
    } catch (cause) {
      db.close();
      if (cause instanceof ReidbError) throw cause;
      throw new ReidbError(
        'gallery_corrupt',
        `cannot use the gallery database ${file}: ${(cause as Error).message}`,
        { input: file, cause },
      );
    }

    return new GalleryStore(db, file, migratedNow);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /** The stored configuration, or null before the first enrolment. */
  config(): GalleryConfig | null {
    const rows = this.db.prepare('SELECT key, value FROM gallery_config').all() as {
      key: string;
      value: string;
    }[];
    if (rows.length === 0) return null;

    const values = new Map(rows.map((row) => [row.key, row.value]));
    const read = (key: string): string => {
      const value = values.get(key);
      if (value === undefined) {
        throw new ReidbError('gallery_corrupt', `gallery_config has no ${key} in ${this.file}`, {
          input: this.file,
        });
      }
      return value;
    };
    const alignMode = read(CONFIG_KEYS.alignMode);
    if (alignMode !== 'mesh' && alignMode !== 'raw') {
      throw new ReidbError('gallery_corrupt', `gallery_config align_mode is '${alignMode}'`, {
        input: this.file,
      });
    }
    return {
      embedderId: read(CONFIG_KEYS.embedderId),
      appearanceDim: Number(read(CONFIG_KEYS.appearanceDim)),
      fusionId: read(CONFIG_KEYS.fusionId),
      fusedDim: Number(read(CONFIG_KEYS.fusedDim)),
      alignMode,
    };
  }

  /** Stores the configuration; only called when none is stored yet. */
  setConfig(config: GalleryConfig): void {
    const insert = this.db.prepare('INSERT INTO gallery_config (key, value) VALUES (?, ?)');
    this.db.transaction(() => {
      for (const [field, key] of Object.entries(CONFIG_KEYS)) {
        insert.run(key, String(config[field as keyof GalleryConfig]));
      }
    })();
  }

  indexState(): IndexState {
    return this.db
      .prepare(
        `SELECT generation, face_count AS faceCount, max_face_id AS maxFaceId
           FROM index_state WHERE id = 1`,
      )
      .get() as IndexState;
  }

  /**
   * Adds faces to an identity, creating it when new, in one transaction. `metadata`, when
   * given, replaces the identity's metadata; so does each field of `policy` that is given
   * (Gallery.enrol allows that only for a new identity, or to repeat what is recorded).
   * Returns the new face ids and uids in input order. Inputs must already be validated.
   */
  enrol(
    identity: string,
    faces: EnrolFace[],
    metadata?: Record<string, unknown>,
    policy: IdentityPolicy = {},
  ): { faceIds: number[]; faceUids: string[] } {
    const now = new Date().toISOString();
    const findIdentity = this.db.prepare('SELECT id FROM identities WHERE external_id = ?');
    const insertIdentity = this.db.prepare(
      'INSERT INTO identities (external_id, created_at, metadata) VALUES (?, ?, ?)',
    );
    const updateMetadata = this.db.prepare('UPDATE identities SET metadata = ? WHERE id = ?');
    const insertFace = this.db.prepare(
      `INSERT INTO faces (identity_id, uid, source, camera, captured_at, enrolled_at,
         box_x, box_y, box_w, box_h, yaw, pitch, roll, quality, detector_score, mesh_score,
         appearance, geometry, fused, thumbnail)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const policyColumns = {
      keepForSeconds: 'keep_for_seconds',
      legalBasis: 'legal_basis',
      purpose: 'purpose',
    } as const;

    return this.db.transaction(() => {
      const metadataJson = metadata === undefined ? undefined : JSON.stringify(metadata);
      const existing = findIdentity.get(identity) as { id: number } | undefined;
      let identityId: number;
      if (existing === undefined) {
        const created = insertIdentity.run(identity, now, metadataJson ?? '{}');
        identityId = Number(created.lastInsertRowid);
      } else {
        identityId = existing.id;
        if (metadataJson !== undefined) updateMetadata.run(metadataJson, identityId);
      }
      for (const [field, column] of Object.entries(policyColumns)) {
        const value = policy[field as keyof IdentityPolicy];
        if (value === undefined) continue;
        this.db.prepare(`UPDATE identities SET ${column} = ? WHERE id = ?`).run(value, identityId);
      }

      const faceIds: number[] = [];
      const faceUids: string[] = [];
      for (const face of faces) {
        const uid = face.uid ?? randomBytes(16).toString('hex');
        const result = insertFace.run(
          identityId,
          uid,
          face.source,
          face.camera ?? null,
          face.capturedAt ?? null,
          face.enrolledAt ?? now,
          face.box.x,
          face.box.y,
          face.box.width,
          face.box.height,
          face.pose.yaw,
          face.pose.pitch,
          face.pose.roll,
          face.quality,
          face.detectorScore,
          face.meshScore,
          float32ToBlob(face.appearance),
          float32ToBlob(face.geometry),
          float32ToBlob(face.fused),
          face.thumbnail ?? null,
        );
        faceIds.push(Number(result.lastInsertRowid));
        faceUids.push(uid);
      }
      return { faceIds, faceUids };
    })();
  }

  /** An identity with its faces (no vectors), or null when it is not enrolled. */
  identity(identity: string): IdentityRecord | null {
    const row = this.db
      .prepare(
        `SELECT id, created_at, metadata, keep_for_seconds, legal_basis, purpose
           FROM identities WHERE external_id = ?`,
      )
      .get(identity) as
      | {
          id: number;
          created_at: string;
          metadata: string;
          keep_for_seconds: number | null;
          legal_basis: string | null;
          purpose: string | null;
        }
      | undefined;
    if (row === undefined) return null;

    const faces = this.db
      .prepare(
        `SELECT id, uid, source, camera, captured_at, enrolled_at, box_x, box_y, box_w, box_h,
                yaw, pitch, roll, quality, detector_score, mesh_score,
                thumbnail IS NOT NULL AS has_thumbnail
           FROM faces WHERE identity_id = ? ORDER BY id`,
      )
      .all(row.id) as FaceRow[];

    return {
      identity,
      createdAt: row.created_at,
      metadata: JSON.parse(row.metadata) as Record<string, unknown>,
      policy: {
        keepForSeconds: row.keep_for_seconds,
        legalBasis: row.legal_basis,
        purpose: row.purpose,
      },
      faces: faces.map((face) => ({
        faceId: face.id,
        uid: face.uid,
        source: face.source,
        camera: face.camera,
        capturedAt: face.captured_at,
        enrolledAt: face.enrolled_at,
        box: { x: face.box_x, y: face.box_y, width: face.box_w, height: face.box_h },
        pose: { yaw: face.yaw, pitch: face.pitch, roll: face.roll },
        quality: face.quality,
        detectorScore: face.detector_score,
        meshScore: face.mesh_score,
        thumbnail: face.has_thumbnail === 1,
      })),
    };
  }

  /**
   * Every stored field of an identity's faces, vectors and thumbnails included, in id order:
   * what a subject access request and an export need. Empty for an unknown identity.
   */
  identityFaceData(identity: string): StoredFace[] {
    const rows = this.db
      .prepare(
        `SELECT f.id, f.uid, f.source, f.camera, f.captured_at, f.enrolled_at, f.box_x, f.box_y,
                f.box_w, f.box_h, f.yaw, f.pitch, f.roll, f.quality, f.detector_score,
                f.mesh_score, f.appearance, f.geometry, f.fused, f.thumbnail
           FROM faces f JOIN identities i ON i.id = f.identity_id
          WHERE i.external_id = ? ORDER BY f.id`,
      )
      .all(identity) as (Omit<FaceRow, 'has_thumbnail'> & {
      appearance: Buffer;
      geometry: Buffer;
      fused: Buffer;
      thumbnail: Buffer | null;
    })[];
    return rows.map((face) => ({
      faceId: face.id,
      uid: face.uid,
      source: face.source,
      camera: face.camera ?? undefined,
      capturedAt: face.captured_at ?? undefined,
      enrolledAt: face.enrolled_at,
      box: { x: face.box_x, y: face.box_y, width: face.box_w, height: face.box_h },
      pose: { yaw: face.yaw, pitch: face.pitch, roll: face.roll },
      quality: face.quality,
      detectorScore: face.detector_score,
      meshScore: face.mesh_score,
      appearance: blobToFloat32(face.appearance),
      geometry: blobToFloat32(face.geometry),
      fused: blobToFloat32(face.fused),
      thumbnail: face.thumbnail ?? undefined,
    }));
  }

  /** Labels of all identities in enrolment order. */
  identityLabels(): string[] {
    return this.db
      .prepare('SELECT external_id FROM identities ORDER BY id')
      .pluck()
      .all() as string[];
  }

  /** The id of the deployment this gallery belongs to, or null before the first link. */
  deploymentLink(): string | null {
    const id = this.db
      .prepare('SELECT deployment_id FROM deployment_link WHERE id = 1')
      .pluck()
      .get() as string | undefined;
    return id ?? null;
  }

  /** Records (or replaces) the deployment this gallery belongs to. */
  setDeploymentLink(deploymentId: string): void {
    this.db
      .prepare(
        `INSERT INTO deployment_link (id, deployment_id, linked_at) VALUES (1, ?, ?)
         ON CONFLICT (id) DO UPDATE SET deployment_id = excluded.deployment_id,
                                        linked_at = excluded.linked_at`,
      )
      .run(deploymentId, new Date().toISOString());
  }

  /** The gallery's policy (migration 002 creates its one row). */
  policy(): GalleryPolicy {
    const row = this.db
      .prepare(
        `SELECT keep_for_seconds, legal_basis, purpose, thumbnails, updated_at
           FROM gallery_policy WHERE id = 1`,
      )
      .get() as {
      keep_for_seconds: number | null;
      legal_basis: string | null;
      purpose: string | null;
      thumbnails: GalleryPolicy['thumbnails'];
      updated_at: string;
    };
    return {
      keepForSeconds: row.keep_for_seconds,
      legalBasis: row.legal_basis,
      purpose: row.purpose,
      thumbnails: row.thumbnails,
      updatedAt: row.updated_at,
    };
  }

  /** Changes the fields of the policy that `patch` gives (null clears one); returns it. */
  setPolicy(patch: Partial<Omit<GalleryPolicy, 'updatedAt'>>): GalleryPolicy {
    const columns = {
      keepForSeconds: 'keep_for_seconds',
      legalBasis: 'legal_basis',
      purpose: 'purpose',
      thumbnails: 'thumbnails',
    } as const;
    this.db.transaction(() => {
      for (const [field, column] of Object.entries(columns)) {
        const value = patch[field as keyof typeof columns];
        if (value === undefined) continue;
        this.db.prepare(`UPDATE gallery_policy SET ${column} = ? WHERE id = 1`).run(value);
      }
      this.db
        .prepare('UPDATE gallery_policy SET updated_at = ? WHERE id = 1')
        .run(new Date().toISOString());
    })();
    return this.policy();
  }

  /**
   * Faces whose keep-for has run out at `now`, oldest first. The keep-for is the shorter of
   * the identity's and the gallery's (either alone when only one is set), so shortening the
   * gallery's reaches every identity. A face with neither never expires.
   */
  expiredFaces(now: Date): ExpiredFace[] {
    const rows = this.db
      .prepare(
        `SELECT i.external_id AS identity, f.id AS faceId, f.uid AS uid,
                f.enrolled_at AS enrolledAt,
                min(coalesce(i.keep_for_seconds, p.keep_for_seconds),
                    coalesce(p.keep_for_seconds, i.keep_for_seconds)) AS keepFor
           FROM faces f
           JOIN identities i ON i.id = f.identity_id
           JOIN gallery_policy p ON p.id = 1
          WHERE coalesce(i.keep_for_seconds, p.keep_for_seconds) IS NOT NULL
          ORDER BY f.enrolled_at, f.id`,
      )
      .all() as (Omit<ExpiredFace, 'expiredAt'> & { keepFor: number })[];

    const nowMs = now.getTime();
    const expired: ExpiredFace[] = [];
    for (const { keepFor, ...face } of rows) {
      const expiresMs = Date.parse(face.enrolledAt) + keepFor * 1000;
      if (expiresMs <= nowMs)
        expired.push({ ...face, expiredAt: new Date(expiresMs).toISOString() });
    }
    return expired;
  }

  /** Face uids of an identity in id order (empty when it is not enrolled). */
  faceUidsOf(identity: string): string[] {
    return this.db
      .prepare(
        `SELECT f.uid FROM faces f JOIN identities i ON i.id = f.identity_id
          WHERE i.external_id = ? ORDER BY f.id`,
      )
      .pluck()
      .all(identity) as string[];
  }

  /** The identities owning these face uids, each with its uids; unknown uids are left out. */
  identitiesOfFaceUids(uids: string[]): Map<string, string[]> {
    const owner = this.db
      .prepare(
        `SELECT i.external_id FROM faces f JOIN identities i ON i.id = f.identity_id
          WHERE f.uid = ?`,
      )
      .pluck();
    const owners = new Map<string, string[]>();
    for (const uid of uids) {
      const identity = owner.get(uid) as string | undefined;
      if (identity === undefined) continue;
      const list = owners.get(identity);
      if (list === undefined) owners.set(identity, [uid]);
      else list.push(uid);
    }
    return owners;
  }

  /** Which of these face uids are stored. */
  heldFaceUids(uids: string[]): Set<string> {
    const held = this.db.prepare('SELECT 1 FROM faces WHERE uid = ?').pluck();
    return new Set(uids.filter((uid) => held.get(uid) !== undefined));
  }

  /** Every face uid in the gallery. */
  allFaceUids(): string[] {
    return this.db.prepare('SELECT uid FROM faces').pluck().all() as string[];
  }

  /**
   * Deletes the faces with these uids, and every identity left with no face, in one
   * transaction (secure_delete zeroes the freed bytes). Returns the removed face ids and the
   * labels of the identities removed whole. Unknown uids are ignored.
   */
  eraseFacesByUid(uids: string[]): { faceIds: number[]; identities: string[] } {
    const find = this.db.prepare('SELECT id, identity_id FROM faces WHERE uid = ?');
    const remove = this.db.prepare('DELETE FROM faces WHERE id = ?');
    const label = this.db.prepare('SELECT external_id FROM identities WHERE id = ?').pluck();
    const facesLeft = this.db.prepare('SELECT count(*) FROM faces WHERE identity_id = ?').pluck();
    const removeIdentity = this.db.prepare('DELETE FROM identities WHERE id = ?');

    return this.db.transaction(() => {
      const faceIds: number[] = [];
      const touched = new Set<number>();
      for (const uid of uids) {
        const row = find.get(uid) as { id: number; identity_id: number } | undefined;
        if (row === undefined) continue;
        remove.run(row.id);
        faceIds.push(row.id);
        touched.add(row.identity_id);
      }

      const identities: string[] = [];
      for (const identityId of touched) {
        if ((facesLeft.get(identityId) as number) > 0) continue;
        identities.push(label.get(identityId) as string);
        removeIdentity.run(identityId);
      }
      return { faceIds, identities };
    })();
  }

  /** Identities in enrolment order with their face counts. */
  listIdentities(
    limit: number,
    offset: number,
  ): { identity: string; createdAt: string; faces: number }[] {
    return this.db
      .prepare(
        `SELECT i.external_id AS identity, i.created_at AS createdAt,
                (SELECT count(*) FROM faces f WHERE f.identity_id = i.id) AS faces
           FROM identities i ORDER BY i.id LIMIT ? OFFSET ?`,
      )
      .all(limit, offset) as { identity: string; createdAt: string; faces: number }[];
  }

  /** A prepared lookup from face id (index label) to identity label. */
  identityOfFaceLookup(): (faceId: number) => string | undefined {
    const statement = this.db
      .prepare(
        `SELECT i.external_id FROM faces f JOIN identities i ON i.id = f.identity_id
          WHERE f.id = ?`,
      )
      .pluck();
    return (faceId) => statement.get(faceId) as string | undefined;
  }

  counts(): { identities: number; faces: number } {
    const identities = this.db.prepare('SELECT count(*) FROM identities').pluck().get() as number;
    const faces = this.db.prepare('SELECT count(*) FROM faces').pluck().get() as number;
    return { identities, faces };
  }

  /** All face ids in ascending order. */
  faceIds(): number[] {
    return this.db.prepare('SELECT id FROM faces ORDER BY id').pluck().all() as number[];
  }

  /** A prepared lookup of one face's fused vector by face id. */
  fusedVectorLookup(): (faceId: number) => Float32Array | undefined {
    const statement = this.db.prepare('SELECT fused FROM faces WHERE id = ?').pluck();
    return (faceId) => {
      const blob = statement.get(faceId) as Buffer | undefined;
      return blob === undefined ? undefined : blobToFloat32(blob);
    };
  }

  /** Fused vectors of all faces (or those with id > `afterFaceId`), in id order. */
  *fusedVectors(afterFaceId = 0): Generator<{ faceId: number; fused: Float32Array }> {
    const statement = this.db.prepare('SELECT id, fused FROM faces WHERE id > ? ORDER BY id');
    for (const row of statement.iterate(afterFaceId) as Iterable<{ id: number; fused: Buffer }>) {
      yield { faceId: row.id, fused: blobToFloat32(row.fused) };
    }
  }

  /** Fused vectors with their identity labels, in id order: the input of exact search. */
  *labelledFusedVectors(): Generator<{ faceId: number; identity: string; fused: Buffer }> {
    const statement = this.db.prepare(
      `SELECT f.id AS faceId, i.external_id AS identity, f.fused AS fused
         FROM faces f JOIN identities i ON i.id = f.identity_id ORDER BY f.id`,
    );
    yield* statement.iterate() as Iterable<{ faceId: number; identity: string; fused: Buffer }>;
  }

  /**
   * Replaces every face's fused vector with `fuse(appearance, geometry)` and records the new
   * fusion in the configuration, in one transaction (all faces or none). Bumps the index
   * generation so that a saved index of the old vectors is seen as stale. Returns the count.
   */
  refuse(
    fusionId: string,
    fusedDim: number,
    fuse: (appearance: Float32Array, geometry: Float32Array) => Float32Array,
  ): number {
    const rows = this.db.prepare('SELECT id, appearance, geometry FROM faces ORDER BY id');
    const update = this.db.prepare('UPDATE faces SET fused = ? WHERE id = ?');
    const setKey = this.db.prepare('UPDATE gallery_config SET value = ? WHERE key = ?');

    return this.db.transaction(() => {
      let count = 0;
      const all = rows.all() as { id: number; appearance: Buffer; geometry: Buffer }[];
      for (const row of all) {
        const fused = fuse(blobToFloat32(row.appearance), blobToFloat32(row.geometry));
        update.run(Buffer.from(fused.buffer, fused.byteOffset, fused.byteLength), row.id);
        count++;
      }
      setKey.run(fusionId, CONFIG_KEYS.fusionId);
      setKey.run(String(fusedDim), CONFIG_KEYS.fusedDim);
      this.db.prepare('UPDATE index_state SET generation = generation + 1 WHERE id = 1').run();
      return count;
    })();
  }

  /**
   * Deletes an identity and (by cascade) its faces in one transaction; with secure_delete on,
   * the freed bytes are zeroed. Returns the removed face ids, or null when the identity is not
   * enrolled (nothing is changed then).
   */
  erase(identity: string): number[] | null {
    return this.db.transaction(() => {
      const row = this.db
        .prepare('SELECT id FROM identities WHERE external_id = ?')
        .get(identity) as { id: number } | undefined;
      if (row === undefined) return null;

      const faceIds = this.db
        .prepare('SELECT id FROM faces WHERE identity_id = ? ORDER BY id')
        .pluck()
        .all(row.id) as number[];
      this.db.prepare('DELETE FROM identities WHERE id = ?').run(row.id);
      return faceIds;
    })();
  }

  /**
   * Copies the WAL into the database file and truncates the WAL to zero bytes, so that old
   * page images (which may hold erased rows) no longer exist in any file. Throws
   * gallery_corrupt when another connection keeps the checkpoint from completing.
   */
  checkpointTruncate(): void {
    const [result] = this.db.pragma('wal_checkpoint(TRUNCATE)') as {
      busy: number;
      log: number;
      checkpointed: number;
    }[];
    if (result !== undefined && result.busy !== 0) {
      throw new ReidbError(
        'gallery_corrupt',
        `the WAL of ${this.file} could not be checkpointed because another connection is ` +
          `reading it; erased data may remain in the -wal file until it is`,
        { input: this.file },
      );
    }
  }
}
