import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ReidbError } from '../errors.ts';

export const LOCK_FILE = 'gallery.lock';

/** Suffix of the short-lived mutex that guards taking over a stale file (see below). */
export const TAKEOVER_SUFFIX = '.takeover';

export interface GalleryLock {
  readonly file: string;
  release(): void;
}

type Holder = {
  pid: number;
  host: string;
  since: string;
};

/** What is in a lock-like file: its exact text and, where it parses, the holder it names. */
interface Content {
  raw: string;
  holder: Holder | null;
}

/** The lock itself is level 0, gallery.lock.takeover level 1, ….takeover.takeover level 2. */
const MAX_LEVEL = 2;
/** How long to wait for a live process that is in the middle of a takeover. */
const TAKEOVER_WAIT_MS = 500;
const TAKEOVER_POLL_MS = 5;

/**
 * Takes the gallery directory's lock: one open Gallery per directory, across processes and
 * within one. Each open gallery keeps its own in-memory index and saves it later, so a
 * second writer could write erased vectors back into the index file. A lock left by a
 * process that no longer runs (killed, crashed) on this host is taken over. Throws
 * gallery_locked naming the holder.
 *
 * The lock file is created with 'wx' (O_CREAT|O_EXCL), which is atomic: of any number of
 * processes that find no lock, exactly one creates it. Taking over a stale lock is not
 * atomic by itself: "read holder, see it is dead, unlink, create" lets process B, which read
 * the stale holder before process A took over, unlink A's fresh lock and create its own, so
 * both would hold it. Hence the rule every step here keeps: a file is only ever removed by
 * the process it names (release, and only while it still names that process), or by the
 * holder of the takeover mutex one level up, after it has re-read the file under that mutex
 * and found exactly the stale text it judged dead. The mutex is `gallery.lock.takeover`,
 * itself created with 'wx' and naming its holder, and held only for the few calls of one
 * takeover (re-read, unlink, create). Under it the re-check is sound: the stale holder is
 * dead, so it neither releases nor writes that text again, and any other remover would need
 * the same mutex; so "still the same text" means "still the stale lock", and no fresh lock
 * can be unlinked by a process that read the stale one earlier. A takeover mutex left by a dead process is cleared the same way, under
 * `gallery.lock.takeover.takeover`; one left at that level (two crashes, each inside a
 * takeover of a few microseconds) is not broken but reported, so exclusion never rests on
 * an unguarded unlink. A process that finds a live takeover in progress waits briefly for it
 * and then reports whoever holds the lock. Files that are empty or unreadable (a creator
 * between its open and its write, or damage) are never taken over.
 */
export function acquireGalleryLock(dir: string): GalleryLock {
  const file = path.join(dir, LOCK_FILE);
  const result = createExclusive(file, 0);
  if ('mine' in result) {
    const mine = result.mine;
    let released = false;
    return {
      file,
      release: () => {
        if (released) return;
        released = true;
        removeIfMine(file, mine);
      },
    };
  }

  const holder = result.busy?.holder ?? null;
  const who = holder
    ? `process ${holder.pid} on ${holder.host} since ${holder.since}`
    : 'another process';
  throw new ReidbError(
    'gallery_locked',
    `the gallery at ${dir} is open in ${who}; stop it (or use its HTTP API) first. ` +
      'A lock left by a process of this host that has ended is taken over by itself; only ' +
      `one left by another host (a shared folder) must be removed by hand: ${file}`,
    { input: dir, details: holder ?? undefined },
  );
}

/**
 * Creates `file` exclusively, naming this process, taking it over when it names a dead
 * process on this host (under the mutex one level up). Returns the text written, or what
 * the file holds when it is someone else's (null when it could not be read).
 */
function createExclusive(file: string, level: number): { mine: string } | { busy: Content | null } {
  const deadline = Date.now() + TAKEOVER_WAIT_MS;
  for (;;) {
    const mine = tryCreate(file);
    if (mine !== null) return { mine };

    const seen = readContent(file);
    if (seen === null) {
      // Removed between our create and our read: try again, unless it keeps flickering.
      if (Date.now() >= deadline) return { busy: null };
      continue;
    }
    if (!isStale(seen.holder) || level >= MAX_LEVEL) return { busy: seen };

    const mutexFile = file + TAKEOVER_SUFFIX;
    const mutex = createExclusive(mutexFile, level + 1);
    if ('busy' in mutex) {
      // A live process is taking this file over right now (or the mutex is stuck):
      // give it a moment, then report whoever holds the file.
      if (Date.now() >= deadline) return { busy: readContent(file) ?? seen };
      sleep(TAKEOVER_POLL_MS);
      continue;
    }
    try {
      const now = readContent(file);
      if (now !== null && now.raw === seen.raw) unlinkQuietly(file);
      const created = tryCreate(file);
      if (created !== null) return { mine: created };
      // Someone created it between our unlink and our create (plain 'wx', no takeover):
      // it is theirs. Loop to read and report it, or take it over if it is stale too.
    } finally {
      removeIfMine(mutexFile, mutex.mine);
    }
  }
}

/** Creates `file` with 'wx' holding this process; null when it already exists. */
function tryCreate(file: string): string | null {
  let fd: number;
  try {
    fd = openSync(file, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw new ReidbError(
      'gallery_corrupt',
      `cannot create the lock ${file}: ${(e as Error).message}`,
      {
        input: file,
        cause: e,
      },
    );
  }
  const holder: Holder = { pid: process.pid, host: os.hostname(), since: new Date().toISOString() };
  const raw = JSON.stringify(holder);
  try {
    writeSync(fd, raw);
  } catch (e) {
    closeSync(fd);
    unlinkQuietly(file);
    throw new ReidbError(
      'gallery_corrupt',
      `cannot write the lock ${file}: ${(e as Error).message}`,
      {
        input: file,
        cause: e,
      },
    );
  }
  closeSync(fd);
  return raw;
}

/** The file's text and holder; null when there is no such file. */
function readContent(file: string): Content | null {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return { raw: '', holder: null };
  }
  return { raw, holder: parseHolder(raw) };
}

function parseHolder(raw: string): Holder | null {
  try {
    const parsed = JSON.parse(raw);
    return Number.isInteger(parsed?.pid) ? parsed : null;
  } catch {
    return null;
  }
}

function isStale(holder: Holder | null): boolean {
  return holder !== null && holder.host === os.hostname() && !isRunning(holder.pid);
}

function isRunning(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes `file` only while it still holds the text this process wrote: no one else removes
 * a live holder's file, so between this read and the unlink it cannot change hands.
 */
function removeIfMine(file: string, mine: string): void {
  if (readContent(file)?.raw === mine) unlinkQuietly(file);
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // Already gone: nothing to release.
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

function sleep(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}
