import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { ReidbError } from '../errors.ts';

export const LOCK_FILE = 'gallery.lock';

export interface GalleryLock {
  readonly file: string;
  release(): void;
}

/**
 * Takes the gallery directory's lock: one open Gallery per directory, across processes and
 * within one. Each open gallery keeps its own in-memory index and saves it later, so a
 * second writer could write erased vectors back into the index file. A lock left by a
 * process that no longer runs (killed, crashed) is taken over. Throws gallery_locked naming
 * the holder.
 */
export function acquireGalleryLock(dir: string): GalleryLock {
  const file = path.join(dir, LOCK_FILE);

  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      const holder = { pid: process.pid, host: os.hostname(), since: new Date().toISOString() };
      writeSync(fd, JSON.stringify(holder));
      closeSync(fd);
      return { file, release: () => unlinkQuietly(file) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new ReidbError(
          'gallery_corrupt',
          `cannot create the lock ${file}: ${(e as Error).message}`,
          {
            input: file,
            cause: e,
          },
        );
      }
    }

    const holder = readHolder(file);
    if (holder !== null && holder.host === os.hostname() && !isRunning(holder.pid)) {
      unlinkQuietly(file);
      continue;
    }
    const who = holder
      ? `process ${holder.pid} on ${holder.host} since ${holder.since}`
      : 'another process';
    throw new ReidbError(
      'gallery_locked',
      `the gallery at ${dir} is open in ${who}; stop it (or use its HTTP API) first. ` +
        `If no such process runs, remove ${file}`,
      { input: dir, details: holder ?? undefined },
    );
  }
  throw new ReidbError('gallery_locked', `the gallery at ${dir} is locked (${file})`, {
    input: dir,
  });
}

function readHolder(file: string): { pid: number; host: string; since: string } | null {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8'));
    return Number.isInteger(parsed.pid) ? parsed : null;
  } catch {
    return null;
  }
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

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // Already gone: nothing to release.
  }
}
