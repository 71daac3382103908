import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import { openGallery } from '../../src/gallery/gallery.ts';
import { LOCK_FILE } from '../../src/gallery/lock.ts';

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a gallery open in one place cannot be opened again until it is closed', async (t) => {
  const dir = tempDir(t);
  const first = await openGallery(dir);
  const e = await t.throwsAsync(openGallery(dir), { instanceOf: ReidbError });
  t.is(e?.code, 'gallery_locked');
  t.regex(e!.message, new RegExp(`is open in process ${process.pid}`));

  first.close();
  t.false(existsSync(path.join(dir, LOCK_FILE)));
  const second = await openGallery(dir);
  second.close();
});

test('a lock left by a process that no longer runs is taken over', async (t) => {
  const dir = tempDir(t);
  const child = spawnSync(process.execPath, ['-e', '0']);
  t.is(child.status, 0);
  mkdirSync(dir, { recursive: true });
  const stale = { pid: child.pid, host: os.hostname(), since: '2026-01-01T00:00:00.000Z' };
  writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify(stale));

  const gallery = await openGallery(dir);
  t.is(gallery.stats().faces, 0);
  gallery.close();
});

test('mustExist refuses a folder without a gallery and creates nothing', async (t) => {
  const dir = path.join(tempDir(t), 'typo');
  const e = await t.throwsAsync(openGallery(dir, { mustExist: true }), { instanceOf: ReidbError });
  t.is(e?.code, 'gallery_not_found');
  t.false(existsSync(dir));
});

test('a file where the gallery folder should be is invalid_argument naming it', async (t) => {
  const file = path.join(tempDir(t), 'not-a-folder');
  writeFileSync(file, 'x');
  const e = await t.throwsAsync(openGallery(file), { instanceOf: ReidbError });
  t.is(e?.code, 'invalid_argument');
  t.regex(e!.message, /not-a-folder/);
});
