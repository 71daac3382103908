import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { ExecutionContext } from 'ava';

/** ../shared/data relative to the repository root. */
export const DATA_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  'shared',
  'data',
);

/** Absolute path of a file or folder inside ../shared/data. */
export function dataPath(...parts: string[]): string {
  return path.join(DATA_DIR, ...parts);
}

/**
 * True when ../shared/data is present. When it is missing: under CI=true the test fails
 * (CI must have the data), elsewhere the caller should return early so that a fresh clone
 * without the data still passes its own tests.
 */
export function hasData(t: ExecutionContext): boolean {
  if (existsSync(DATA_DIR)) return true;
  if (process.env.CI === 'true') {
    t.fail(`../shared/data is missing at ${DATA_DIR}; CI must provide it`);
    return false;
  }
  t.log(`../shared/data not found at ${DATA_DIR}; real-data assertions not run`);
  t.pass();
  return false;
}
