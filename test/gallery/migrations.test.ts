import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import test from 'ava';
import Database from 'better-sqlite3';

import { openGallery } from '../../src/gallery/gallery.ts';
import { DEFAULT_MIGRATIONS_DIR, readMigrations } from '../../src/gallery/migrations.ts';
import { GalleryStore } from '../../src/gallery/store.ts';
import { tempDir } from './fixtures.ts';

function copyMigrations(t: import('ava').ExecutionContext): string {
  const dir = tempDir(t, 'reidb-migrations-');
  cpSync(DEFAULT_MIGRATIONS_DIR, dir, { recursive: true });
  return dir;
}

/** The repository's migration versions, and the file name a next migration would take. */
const SHIPPED = readMigrations(DEFAULT_MIGRATIONS_DIR).map((m) => m.version);
const NEXT = SHIPPED[SHIPPED.length - 1]! + 1;
const nextFile = (name: string): string => `${String(NEXT).padStart(3, '0')}_${name}.sql`;

interface Recorded {
  version: number;
  name: string;
  sha256: string;
  applied_at: string;
}

function recorded(galleryDir: string): Recorded[] {
  const db = new Database(path.join(galleryDir, 'gallery.sqlite'), { readonly: true });
  try {
    return db.prepare('SELECT * FROM schema_migrations ORDER BY version').all() as never;
  } finally {
    db.close();
  }
}

test('the first open applies and records every migration; a reopen applies none', async (t) => {
  const dir = tempDir(t);
  (await openGallery(dir)).close();

  const first = recorded(dir);
  const files = readMigrations(DEFAULT_MIGRATIONS_DIR);
  t.deepEqual(
    first.map((row) => [row.version, row.name, row.sha256]),
    files.map((file) => [file.version, file.name, file.sha256]),
  );
  t.is(first[0]!.name, 'initial');
  t.regex(first[0]!.sha256, /^[0-9a-f]{64}$/);

  (await openGallery(dir)).close();
  t.deepEqual(recorded(dir), first);
});

test('the store sets WAL, foreign keys, secure_delete and synchronous FULL', (t) => {
  const store = GalleryStore.open(path.join(tempDir(t), 'gallery.sqlite'));
  t.teardown(() => store.close());
  const pragma = (name: string): unknown => store.db.pragma(name, { simple: true });

  t.is(pragma('journal_mode'), 'wal');
  t.is(pragma('foreign_keys'), 1);
  t.is(pragma('secure_delete'), 1);
  t.is(pragma('synchronous'), 2);
});

test('a migration edited after it was applied is gallery_corrupt naming the file', async (t) => {
  const migrations = copyMigrations(t);
  const dir = tempDir(t);
  (await openGallery(dir, { migrationsDir: migrations })).close();

  const file = path.join(migrations, '001_initial.sql');
  writeFileSync(file, readFileSync(file, 'utf8') + '\n-- an innocent-looking edit\n');

  const error = await t.throwsAsync(openGallery(dir, { migrationsDir: migrations }));
  t.is((error as { code?: string }).code, 'gallery_corrupt');
  t.is((error as { input?: string }).input, file);
  t.regex(error!.message, /001_initial\.sql was changed/);
});

test('a new migration is applied on the next open and recorded', async (t) => {
  const migrations = copyMigrations(t);
  const dir = tempDir(t);
  (await openGallery(dir, { migrationsDir: migrations })).close();

  writeFileSync(
    path.join(migrations, nextFile('face_notes')),
    'ALTER TABLE faces ADD COLUMN note TEXT;\n',
  );
  (await openGallery(dir, { migrationsDir: migrations })).close();
  t.deepEqual(
    recorded(dir).map((row) => row.version),
    [...SHIPPED, NEXT],
  );
});

test('a gallery migrated by a newer reidb refuses to open', async (t) => {
  const migrations = copyMigrations(t);
  const dir = tempDir(t);
  writeFileSync(path.join(migrations, nextFile('future')), 'CREATE TABLE future (x INTEGER);\n');
  (await openGallery(dir, { migrationsDir: migrations })).close();

  const error = await t.throwsAsync(openGallery(dir));
  t.is((error as { code?: string }).code, 'gallery_mismatch');
  t.regex(error!.message, new RegExp(`newer than this reidb: migration ${NEXT} \\(future\\)`));
});

test('a failing migration leaves the schema as it was', async (t) => {
  const migrations = copyMigrations(t);
  const dir = tempDir(t);
  (await openGallery(dir, { migrationsDir: migrations })).close();

  writeFileSync(
    path.join(migrations, nextFile('broken')),
    'CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;\n',
  );
  const error = await t.throwsAsync(openGallery(dir, { migrationsDir: migrations }));
  t.is((error as { code?: string }).code, 'gallery_corrupt');
  t.is((error as { input?: string }).input, path.join(migrations, nextFile('broken')));

  t.deepEqual(
    recorded(dir).map((row) => row.version),
    SHIPPED,
  );
  const db = new Database(path.join(dir, 'gallery.sqlite'), { readonly: true });
  t.teardown(() => db.close());
  t.is(db.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").pluck().get(), 0);
});
