/**
 * One contender of the lock race in lock.test.ts (not a test itself). Its one argument is
 * JSON: {"holdMs":300,"jitterUs":30,"rounds":[{"dir":"…","start":1700000000000},…]}. For
 * each round it waits until `start` (ms since the epoch), so that all contenders go at the
 * same moment, then up to jitterUs microseconds more (so that their steps interleave), calls acquireGalleryLock(dir) once, and prints one JSON line: {"round":0,"held":true,
 * "enter":…,"exit":…} with the times it held the lock (taken inside the holding, so the real
 * holding covers them), or {"round":0,"held":false,"code":"gallery_locked"}.
 *
 * The environment variable REIDB_TEST_LOCK_MODULE (a path) replaces ../../src/gallery/lock.ts,
 * to run the race against another implementation of the lock.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import type { GalleryLock } from '../../src/gallery/lock.ts';

interface Plan {
  holdMs: number;
  jitterUs: number;
  rounds: { dir: string; start: number }[];
}

const plan = JSON.parse(process.argv[2]!) as Plan;
const lockModule = process.env.REIDB_TEST_LOCK_MODULE;
const { acquireGalleryLock } = (await import(
  lockModule ? pathToFileURL(path.resolve(lockModule)).href : '../../src/gallery/lock.ts'
)) as { acquireGalleryLock: (dir: string) => GalleryLock };

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const sleep = (ms: number) => Atomics.wait(sleeper, 0, 0, Math.max(0, ms));

for (const [round, { dir, start }] of plan.rounds.entries()) {
  sleep(start - Date.now() - 3);
  while (Date.now() < start) {
    // spin the last milliseconds so that all contenders go at once
  }
  const go = process.hrtime.bigint() + BigInt(Math.floor(Math.random() * plan.jitterUs * 1000));
  while (process.hrtime.bigint() < go) {
    // and then a random few microseconds more, so that their steps interleave
  }
  let lock: GalleryLock;
  try {
    lock = acquireGalleryLock(dir);
  } catch (e) {
    const code = (e as { code?: string }).code;
    process.stdout.write(JSON.stringify({ round, held: false, code }) + '\n');
    continue;
  }
  const enter = Date.now();
  sleep(plan.holdMs);
  const exit = Date.now();
  lock.release();
  process.stdout.write(JSON.stringify({ round, held: true, enter, exit }) + '\n');
}
