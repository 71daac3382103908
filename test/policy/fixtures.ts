import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import type { ExecutionContext } from 'ava';
import Database from 'better-sqlite3';

import { DEPLOYMENT_FILE, openDeployment, type Deployment } from '../../src/policy/deployment.ts';

/** A fresh temporary directory removed when the test ends. */
export function tempDir(t: ExecutionContext, prefix = 'reidb-policy-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A clock that stands still until moved: `clock.now` for openDeployment, `advance` in ms. */
export function manualClock(start = '2025-01-01T00:00:00.000Z'): {
  now: () => Date;
  advance: (ms: number) => void;
} {
  let time = Date.parse(start);
  return { now: () => new Date(time), advance: (ms) => (time += ms) };
}

/** A deployment in a fresh temporary directory, closed when the test ends. */
export function tempDeployment(
  t: ExecutionContext,
  options: { now?: () => Date } = {},
): { dir: string; deployment: Deployment } {
  const dir = tempDir(t);
  const deployment = openDeployment(dir, options);
  t.teardown(() => deployment.close());
  return { dir, deployment };
}

/** A second, raw connection to a deployment's file, as another tool (or an attacker) has. */
export function rawConnection(t: ExecutionContext, dir: string): Database.Database {
  const db = new Database(path.join(dir, DEPLOYMENT_FILE), { fileMustExist: true });
  db.pragma('busy_timeout = 5000');
  t.teardown(() => db.close());
  return db;
}

/** The bytes of deployment.sqlite and its -wal and -shm files, concatenated. */
export function deploymentBytes(dir: string): Buffer {
  const files = readdirSync(dir).filter((name) => name.startsWith(DEPLOYMENT_FILE));
  return Buffer.concat(files.map((name) => readFileSync(path.join(dir, name))));
}

/** A valid-looking identity reference, 'ref_' + 24 hex digits from `n`. */
export function ref(n: number): string {
  return 'ref_' + n.toString(16).padStart(24, '0');
}

/**
 * The message of what `run` throws (better-sqlite3's SqliteError is not a native Error, which
 * t.throws requires); fails the test when it throws nothing.
 */
export function thrownMessage(t: ExecutionContext, run: () => unknown): string {
  try {
    run();
  } catch (error) {
    return String((error as { message?: unknown }).message ?? error);
  }
  t.fail('expected it to throw');
  return '';
}
