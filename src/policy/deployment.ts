import { createHmac, randomBytes, randomUUID, type Hmac } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { ReidbError } from '../errors.ts';
import { applyMigrations } from '../gallery/migrations.ts';
import { setPragmas } from '../gallery/store.ts';
import { silentLogger, type Logger } from '../log.ts';
import { AuditTrail } from './audit.ts';
import { ExportKeys } from './export-keys.ts';
import { ApiKeys } from './keys.ts';
import { ErasureLedger } from './ledger.ts';

/** The deployment's database, beside gallery.sqlite in a gallery directory. */
export const DEPLOYMENT_FILE = 'deployment.sqlite';

/** The migrations/deployment/ folder of this checkout, used when no other folder is given. */
export const DEPLOYMENT_MIGRATIONS_DIR = fileURLToPath(
  new URL('../../migrations/deployment/', import.meta.url),
);

/** Bytes of the pseudonym secret. */
const SECRET_BYTES = 32;

/** Hex digits of HMAC-SHA256 kept in an identity reference (96 bits). */
const REF_HEX_DIGITS = 24;

/** What the secret is HMAC'd with to derive the key that authenticates sealed exports. */
const EXPORT_MAC_LABEL = 'reidb-export-mac-v1';

export interface DeploymentOptions {
  /** Default silentLogger. */
  logger?: Logger;
  /** Folder of NNN_name.sql files; default DEPLOYMENT_MIGRATIONS_DIR. */
  migrationsDir?: string;
  /** Refuse to create the directory or the file (gallery_not_found); default false. */
  mustExist?: boolean;
  /** How long a statement waits for another connection's lock, in ms; default 5000. */
  busyTimeoutMs?: number;
  /** The clock for every time written; default `() => new Date()`. */
  now?: () => Date;
}

interface InfoRow {
  deployment_id: string;
  pseudonym_secret: Buffer;
}

/**
 * An open deployment.sqlite: API keys, the audit trail, the erasure ledger and the export
 * keys, plus the pseudonym secret behind identity references. Every method is synchronous
 * (better-sqlite3). Several processes (a server and the CLI) may hold the same deployment
 * open at once: every write that reads first runs in an IMMEDIATE transaction, so two writers
 * never act on the same stale read.
 */
export class Deployment {
  /** Absolute path of deployment.sqlite. */
  readonly file: string;
  /** The deployment's random UUID, fixed at its creation. */
  readonly id: string;
  readonly keys: ApiKeys;
  readonly audit: AuditTrail;
  readonly ledger: ErasureLedger;
  readonly exportKeys: ExportKeys;

  readonly #db: Database.Database;
  readonly #secret: Buffer;

  /** Use openDeployment. */
  constructor(db: Database.Database, file: string, id: string, secret: Buffer, now: () => Date) {
    this.#db = db;
    this.#secret = secret;
    this.file = file;
    this.id = id;
    this.keys = new ApiKeys(db, now);
    this.audit = new AuditTrail(db, now);
    this.ledger = new ErasureLedger(db, now);
    this.exportKeys = new ExportKeys(db, id, now);
  }

  /**
   * The pseudonymous reference of an identity label, as written in the audit trail, the
   * ledger and the export keys: 'ref_' + the first 24 hex digits (96 bits) of
   * HMAC-SHA256(pseudonym secret, label as UTF-8). Stable for the deployment's lifetime and
   * not reversible without the secret.
   */
  identityRef(identity: string): string {
    if (typeof identity !== 'string' || identity.length === 0) {
      throw new ReidbError('invalid_argument', 'identity must be a non-empty string', {
        input: 'identity',
      });
    }

    const mac = createHmac('sha256', this.#secret).update(identity, 'utf8').digest('hex');
    return 'ref_' + mac.slice(0, REF_HEX_DIGITS);
  }

  /**
   * A running HMAC-SHA256 that authenticates the lines of a sealed export, keyed with
   * HMAC-SHA256(pseudonym secret, 'reidb-export-mac-v1'): a key derived for this one use, so
   * that the secret itself never keys anything an export reveals. Only this deployment can
   * make or check such a MAC. Feed it with update() and read the hex digest with digest('hex').
   */
  exportMac(): Hmac {
    const key = createHmac('sha256', this.#secret).update(EXPORT_MAC_LABEL, 'utf8').digest();
    return createHmac('sha256', key);
  }

  /**
   * Copies the WAL into deployment.sqlite and truncates the WAL to zero bytes, so that old
   * page images (a destroyed export key, for one) no longer exist in any file. Throws
   * gallery_corrupt naming the file when another connection keeps the checkpoint from
   * completing.
   */
  checkpointTruncate(): void {
    const [result] = this.#db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
    if (result !== undefined && result.busy !== 0) {
      throw new ReidbError(
        'gallery_corrupt',
        `the WAL of ${this.file} could not be checkpointed because another connection is ` +
          `using it; destroyed keys may remain in the -wal file until it is`,
        { input: this.file },
      );
    }
  }

  /** Closes the connection; calling it again does nothing. */
  close(): void {
    if (this.#db.open) this.#db.close();
  }
}

/**
 * Opens `dir`/deployment.sqlite, creating the directory and the file (mode 0600) unless
 * `mustExist`, sets the pragmas, applies pending migrations and, at the first open, writes the
 * deployment id and pseudonym secret. Pragmas as for the gallery: WAL journal, secure_delete
 * on (verified), synchronous FULL, foreign keys on, trusted_schema off, busy_timeout
 * `busyTimeoutMs` (default 5000 ms). Throws gallery_not_found naming `dir` when `mustExist`
 * and there is no deployment, gallery_corrupt naming the file when it cannot be used.
 */
export function openDeployment(dir: string, options: DeploymentOptions = {}): Deployment {
  const logger = options.logger ?? silentLogger;
  const now = options.now ?? (() => new Date());
  const file = path.resolve(dir, DEPLOYMENT_FILE);

  if (options.mustExist === true && !existsSync(file)) {
    throw new ReidbError('gallery_not_found', `no deployment (${DEPLOYMENT_FILE}) in ${dir}`, {
      input: dir,
    });
  }
  if (options.mustExist !== true) createFile(dir, file);

  let db: Database.Database;
  try {
    db = new Database(file, { fileMustExist: true });
  } catch (cause) {
    if (options.mustExist === true && !existsSync(file)) {
      throw new ReidbError('gallery_not_found', `no deployment (${DEPLOYMENT_FILE}) in ${dir}`, {
        input: dir,
        cause,
      });
    }
    throw new ReidbError('gallery_corrupt', `cannot open the deployment database ${file}`, {
      input: file,
      cause,
    });
  }

  let info: InfoRow;
  try {
    checkedPragmas(db, options.busyTimeoutMs ?? 5000);
    info = initialise(db, options.migrationsDir ?? DEPLOYMENT_MIGRATIONS_DIR, logger, now);
  } catch (cause) {
    db.close();
    if (cause instanceof ReidbError) throw cause;
    throw new ReidbError(
      'gallery_corrupt',
      `cannot use the deployment database ${file}: ${(cause as Error).message}`,
      { input: file, cause },
    );
  }

  return new Deployment(db, file, info.deployment_id, info.pseudonym_secret, now);
}

/** Creates the directory and an empty deployment file readable by its owner only. */
function createFile(dir: string, file: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (cause) {
    throw new ReidbError('gallery_corrupt', `cannot create the gallery directory ${dir}`, {
      input: dir,
      cause,
    });
  }

  // SQLite gives the -wal and -shm files the permissions of the database file, so creating
  // it 0600 here keeps the secrets in all three away from other users.
  try {
    closeSync(openSync(file, 'wx', 0o600));
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'EEXIST') {
      // A file made by someone else (a copy, an empty placeholder) is made private too.
      try {
        chmodSync(file, 0o600);
      } catch {
        // Not ours to change (another owner): SQLite's own errors will say more.
      }
      return;
    }
    throw new ReidbError('gallery_corrupt', `cannot create the deployment database ${file}`, {
      input: file,
      cause,
    });
  }
}

function checkedPragmas(db: Database.Database, busyTimeoutMs: number): void {
  if (!Number.isInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new ReidbError('invalid_argument', `busyTimeoutMs must be a whole number of ms >= 0`, {
      input: 'busyTimeoutMs',
    });
  }
  setPragmas(db, busyTimeoutMs);
}

/**
 * Applies pending migrations and writes the deployment_info row when there is none, in one
 * IMMEDIATE transaction, so that two processes opening a new deployment at once neither both
 * migrate nor write two different secrets. Returns the row.
 */
function initialise(
  db: Database.Database,
  migrationsDir: string,
  logger: Logger,
  now: () => Date,
): InfoRow {
  const read = (): InfoRow | undefined =>
    db.prepare('SELECT deployment_id, pseudonym_secret FROM deployment_info WHERE id = 1').get() as
      InfoRow | undefined;

  const { row, created } = db
    .transaction(() => {
      // applyMigrations' own transaction becomes a savepoint inside this one.
      applyMigrations(db, migrationsDir, logger);

      const existing = read();
      if (existing !== undefined) return { row: existing, created: false };

      db.prepare(
        `INSERT INTO deployment_info (id, deployment_id, pseudonym_secret, created_at)
         VALUES (1, ?, ?, ?)`,
      ).run(randomUUID(), randomBytes(SECRET_BYTES), now().toISOString());
      return { row: read()!, created: true };
    })
    .immediate();

  if (!Buffer.isBuffer(row.pseudonym_secret) || row.pseudonym_secret.length !== SECRET_BYTES) {
    throw new Error('deployment_info holds no valid pseudonym secret');
  }
  if (created) logger.info('deployment created', { deploymentId: row.deployment_id });
  return row;
}
