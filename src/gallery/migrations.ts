import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type Database from 'better-sqlite3';

import { ReidbError } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';

/** The migrations/ folder of this checkout, used when no other folder is given. */
export const DEFAULT_MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

/** Migration files are named `NNN_words.sql`: a zero-padded version, then a name. */
const MIGRATION_FILE = /^(\d{3,})_([a-z0-9_]+)\.sql$/;

export interface Migration {
  version: number;
  name: string;
  /** Absolute path of the .sql file. */
  file: string;
  /** Hex sha256 of the file's bytes. */
  sha256: string;
  sql: string;
}

export interface AppliedMigration {
  version: number;
  name: string;
  sha256: string;
  appliedAt: string;
}

/**
 * Reads the migration files of `dir` in version order. Throws gallery_corrupt when the folder
 * cannot be read, is empty, or holds two files with one version.
 */
export function readMigrations(dir: string): Migration[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (cause) {
    throw new ReidbError('gallery_corrupt', `cannot read the migrations folder ${dir}`, {
      input: dir,
      cause,
    });
  }

  const migrations: Migration[] = [];
  for (const name of names) {
    const match = MIGRATION_FILE.exec(name);
    if (match === null) continue;

    const file = path.join(dir, name);
    const bytes = readFileSync(file);
    migrations.push({
      version: Number(match[1]),
      name: match[2]!,
      file,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      sql: bytes.toString('utf8'),
    });
  }
  migrations.sort((a, b) => a.version - b.version);

  if (migrations.length === 0) {
    throw new ReidbError('gallery_corrupt', `no migration files (NNN_name.sql) in ${dir}`, {
      input: dir,
    });
  }
  for (let i = 1; i < migrations.length; i++) {
    if (migrations[i]!.version === migrations[i - 1]!.version) {
      throw new ReidbError(
        'gallery_corrupt',
        `two migration files share version ${migrations[i]!.version}: ` +
          `${path.basename(migrations[i - 1]!.file)} and ${path.basename(migrations[i]!.file)}`,
        { input: migrations[i]!.file },
      );
    }
  }

  return migrations;
}

/** The migrations a database records as applied, in version order. */
export function appliedMigrations(db: Database.Database): AppliedMigration[] {
  return db
    .prepare(
      `SELECT version, name, sha256, applied_at AS appliedAt
         FROM schema_migrations ORDER BY version`,
    )
    .all() as AppliedMigration[];
}

/**
 * Brings the schema of `db` up to date with the files in `dir`. First it checks what is
 * already applied: a recorded version with no file here means the gallery was written by a
 * newer reidb (gallery_mismatch); a file whose sha256 differs from the recorded one was edited
 * after it was applied (gallery_corrupt naming the file). Then every pending file is applied
 * in version order, all in one transaction, each recorded in schema_migrations. Returns the
 * versions applied by this call (empty when the schema was current).
 */
export function applyMigrations(
  db: Database.Database,
  dir: string = DEFAULT_MIGRATIONS_DIR,
  logger: Logger = silentLogger,
): number[] {
  const migrations = readMigrations(dir);

  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    applied_at TEXT NOT NULL
  ) STRICT`);

  const byVersion = new Map(migrations.map((m) => [m.version, m]));
  const applied = appliedMigrations(db);
  const newestKnown = migrations[migrations.length - 1]!.version;

  for (const row of applied) {
    const file = byVersion.get(row.version);
    if (file === undefined) {
      throw new ReidbError(
        'gallery_mismatch',
        `the gallery's schema is newer than this reidb: migration ${row.version} (${row.name}) ` +
          `is applied, but this reidb only knows migrations up to ${newestKnown}; ` +
          `open it with a newer reidb`,
        { details: { appliedVersion: row.version, newestKnown } },
      );
    }
    if (file.sha256 !== row.sha256) {
      throw new ReidbError(
        'gallery_corrupt',
        `migration file ${file.file} was changed after the gallery applied it ` +
          `(recorded sha256 ${row.sha256}, file now ${file.sha256}); restore the original file ` +
          `and put schema changes in a new migration`,
        { input: file.file },
      );
    }
  }

  const appliedVersions = new Set(applied.map((row) => row.version));
  const newestApplied = applied.length === 0 ? 0 : applied[applied.length - 1]!.version;
  const pending = migrations.filter((m) => !appliedVersions.has(m.version));
  const skipped = pending.find((m) => m.version < newestApplied);
  if (skipped !== undefined) {
    throw new ReidbError(
      'gallery_corrupt',
      `migration ${path.basename(skipped.file)} is not applied although the later migration ` +
        `${newestApplied} is; migrations must only be added after the newest one`,
      { input: skipped.file },
    );
  }
  if (pending.length === 0) return [];

  const record = db.prepare(
    'INSERT INTO schema_migrations (version, name, sha256, applied_at) VALUES (?, ?, ?, ?)',
  );
  db.transaction(() => {
    for (const migration of pending) {
      try {
        db.exec(migration.sql);
      } catch (cause) {
        throw new ReidbError(
          'gallery_corrupt',
          `migration ${migration.file} failed: ${(cause as Error).message}`,
          { input: migration.file, cause },
        );
      }
      record.run(migration.version, migration.name, migration.sha256, new Date().toISOString());
    }
  })();

  const versions = pending.map((m) => m.version);
  logger.info('gallery schema migrated', { versions });
  return versions;
}
