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
}

/** A stored face as reported to callers: never its vectors. */
export interface FaceRecord {
  faceId: number;
  source: string;
  camera: string | null;
  capturedAt: string | null;
  enrolledAt: string;
  box: Box;
  pose: HeadPose;
  quality: number;
  detectorScore: number;
  meshScore: number;
}

export interface IdentityRecord {
  identity: string;
  createdAt: string;
  metadata: Record<string, unknown>;
  faces: FaceRecord[];
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

  private constructor(db: Database.Database, file: string) {
    this.db = db;
    this.file = file;
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
      db = new Database(file);
    } catch (cause) {
      throw new ReidbError('gallery_corrupt', `cannot open the gallery database ${file}`, {
        input: file,
        cause,
      });
    }

    try {
      db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, not wal`);
      db.pragma('foreign_keys = ON');
      db.pragma('secure_delete = ON');
      if (db.pragma('secure_delete', { simple: true }) !== 1) {
        throw new Error('this SQLite build does not allow secure_delete');
      }
      db.pragma('synchronous = FULL');
      db.pragma('trusted_schema = OFF');

      applyMigrations(db, options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR, logger);
    } catch (cause) {
      db.close();
      if (cause instanceof ReidbError) throw cause;
      throw new ReidbError(
        'gallery_corrupt',
        `cannot use the gallery database ${file}: ${(cause as Error).message}`,
        { input: file, cause },
      );
    }

    return new GalleryStore(db, file);
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
   * given, replaces the identity's metadata. Returns the new face ids in input order.
   * Inputs must already be validated.
   */
  enrol(identity: string, faces: EnrolFace[], metadata?: Record<string, unknown>): number[] {
    const now = new Date().toISOString();
    const findIdentity = this.db.prepare('SELECT id FROM identities WHERE external_id = ?');
    const insertIdentity = this.db.prepare(
      'INSERT INTO identities (external_id, created_at, metadata) VALUES (?, ?, ?)',
    );
    const updateMetadata = this.db.prepare('UPDATE identities SET metadata = ? WHERE id = ?');
    const insertFace = this.db.prepare(
      `INSERT INTO faces (identity_id, source, camera, captured_at, enrolled_at,
         box_x, box_y, box_w, box_h, yaw, pitch, roll, quality, detector_score, mesh_score,
         appearance, geometry, fused)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );

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

      return faces.map((face) => {
        const result = insertFace.run(
          identityId,
          face.source,
          face.camera ?? null,
          face.capturedAt ?? null,
          now,
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
        );
        return Number(result.lastInsertRowid);
      });
    })();
  }

  /** An identity with its faces (no vectors), or null when it is not enrolled. */
  identity(identity: string): IdentityRecord | null {
    const row = this.db
      .prepare('SELECT id, created_at, metadata FROM identities WHERE external_id = ?')
      .get(identity) as { id: number; created_at: string; metadata: string } | undefined;
    if (row === undefined) return null;

    const faces = this.db
      .prepare(
        `SELECT id, source, camera, captured_at, enrolled_at, box_x, box_y, box_w, box_h,
                yaw, pitch, roll, quality, detector_score, mesh_score
           FROM faces WHERE identity_id = ? ORDER BY id`,
      )
      .all(row.id) as FaceRow[];

    return {
      identity,
      createdAt: row.created_at,
      metadata: JSON.parse(row.metadata) as Record<string, unknown>,
      faces: faces.map((face) => ({
        faceId: face.id,
        source: face.source,
        camera: face.camera,
        capturedAt: face.captured_at,
        enrolledAt: face.enrolled_at,
        box: { x: face.box_x, y: face.box_y, width: face.box_w, height: face.box_h },
        pose: { yaw: face.yaw, pitch: face.pitch, roll: face.roll },
        quality: face.quality,
        detectorScore: face.detector_score,
        meshScore: face.mesh_score,
      })),
    };
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
