import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import { openGallery } from '../../src/gallery/gallery.ts';
import { LOCK_FILE, TAKEOVER_SUFFIX } from '../../src/gallery/lock.ts';

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

test('a takeover mutex left by a process that no longer runs is cleared, and nothing is left', async (t) => {
  const dir = tempDir(t);
  const child = spawnSync(process.execPath, ['-e', '0']);
  t.is(child.status, 0);
  const stale = { pid: child.pid, host: os.hostname(), since: '2026-01-01T00:00:00.000Z' };
  writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify(stale));
  writeFileSync(path.join(dir, LOCK_FILE + TAKEOVER_SUFFIX), JSON.stringify(stale));

  const gallery = await openGallery(dir);
  t.false(existsSync(path.join(dir, LOCK_FILE + TAKEOVER_SUFFIX)));
  const e = await t.throwsAsync(openGallery(dir), { instanceOf: ReidbError });
  t.is(e?.code, 'gallery_locked');
  t.regex(e!.message, new RegExp(`is open in process ${process.pid}`));
  gallery.close();
  t.false(existsSync(path.join(dir, LOCK_FILE)));
});

const CONTENDER = fileURLToPath(new URL('./lock-contender.ts', import.meta.url));

interface Outcome {
  round: number;
  held: boolean;
  enter?: number;
  exit?: number;
  code?: string;
}

function runContender(plan: object): Promise<{ status: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', CONTENDER, JSON.stringify(plan)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, out, err }));
  });
}

test('a stale lock that several processes take over at the same moment is held by one at a time', async (t) => {
  // The reviewer's race: A unlinks the stale lock and creates its own; B, which had read the
  // stale holder before, unlinks A's fresh lock and creates its own, and both hold it.
  // Only a few microseconds decide it, so a round catches it now and then (1 in 5 or so on
  // a busy 2-core machine): hence many short rounds, a new one every 150 ms, each in its own
  // folder. A holder misses the rounds during its 300 ms and joins the next ones late, and
  // the others contend on time.
  const contenders = 6;
  const rounds = 40;
  const holdMs = 300;
  const root = tempDir(t);
  const dead = spawnSync(process.execPath, ['-e', '0']);
  t.is(dead.status, 0);
  const dirs = Array.from({ length: rounds }, (_, round) => {
    const dir = path.join(root, `round-${round}`);
    mkdirSync(dir);
    const stale = { pid: dead.pid, host: os.hostname(), since: '2026-01-01T00:00:00.000Z' };
    writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify(stale));
    return dir;
  });
  // First give the contenders time to start (node and tsx, on a busy machine).
  const first = Date.now() + 3000;
  const plan = {
    holdMs,
    jitterUs: 30,
    rounds: dirs.map((dir, round) => ({ dir, start: first + round * 150 })),
  };

  const results = await Promise.all(Array.from({ length: contenders }, () => runContender(plan)));
  const outcomes: Outcome[] = [];
  for (const r of results) {
    t.is(r.status, 0, r.err);
    outcomes.push(
      ...r.out
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line)),
    );
  }
  t.is(outcomes.length, contenders * rounds);

  for (let round = 0; round < rounds; round++) {
    const mine = outcomes.filter((o) => o.round === round);
    for (const o of mine.filter((o) => !o.held)) t.is(o.code, 'gallery_locked');
    const held = mine.filter((o) => o.held).sort((a, b) => a.enter! - b.enter!);
    t.true(held.length >= 1, `round ${round}: no one took the stale lock over`);
    for (let i = 1; i < held.length; i++) {
      t.true(
        held[i]!.enter! >= held[i - 1]!.exit!,
        `round ${round}: two processes held the lock at once: ${JSON.stringify(held)}`,
      );
    }
    t.deepEqual(readdirSync(dirs[round]!), [], `round ${round}: files left behind`);
  }
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
