import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import { ReidbError } from '../errors.ts';
import manifest from './manifest.json' with { type: 'json' };

/** One model as the manifest (src/models/manifest.json) records it. */
export interface ModelEntry {
  id: string;
  stage: string;
  package: string;
  format: 'tfjs-graph' | 'tfjs-weights' | 'onnx';
  entry: string;
  files: { path: string; bytes: number; sha256: string }[];
  licence: string;
  source: string;
}

/** A model whose files were found and checked against the manifest. */
export interface VerifiedModel {
  entry: ModelEntry;
  /** Absolute path of the entry file (graph JSON or weights manifest). */
  entryPath: string;
  /** Absolute directory holding the model files. */
  dir: string;
}

const require = createRequire(import.meta.url);

export function listModels(): ModelEntry[] {
  return manifest.models as ModelEntry[];
}

/** Root directory of an installed npm package. */
export function packageRoot(name: string): string {
  try {
    return path.dirname(require.resolve(`${name}/package.json`));
  } catch {
    // Some packages do not export package.json; walk up from the main entry instead.
    let dir = path.dirname(require.resolve(name));
    while (!dir.endsWith(path.join('node_modules', ...name.split('/')))) {
      const parent = path.dirname(dir);
      if (parent === dir) throw new Error(`cannot locate package ${name}`);
      dir = parent;
    }
    return dir;
  }
}

/**
 * Finds a model by id and checks every file's size and sha256 against the manifest.
 * `dir` overrides where the files are looked up (default: the npm package that ships them).
 * Throws `model_missing` or `model_corrupt`, naming the file.
 */
export function resolveModel(id: string, dir?: string): VerifiedModel {
  const entry = listModels().find((m) => m.id === id);
  if (!entry) {
    throw new ReidbError('model_missing', `model '${id}' is not in the model manifest`, {
      input: id,
    });
  }

  let base: string;
  try {
    base = dir ?? packageRoot(entry.package);
  } catch (cause) {
    throw new ReidbError(
      'model_missing',
      `model '${id}': package ${entry.package} is not installed (run npm install)`,
      { input: entry.package, cause },
    );
  }

  for (const file of entry.files) {
    const full = dir ? path.join(dir, path.basename(file.path)) : path.join(base, file.path);
    verifyFile(id, full, file.bytes, file.sha256);
  }

  const entryPath = dir ? path.join(dir, path.basename(entry.entry)) : path.join(base, entry.entry);
  return { entry, entryPath, dir: path.dirname(entryPath) };
}

/** Checks a file's size and sha256; throws model_missing / model_corrupt naming the file. */
export function verifyFile(id: string, file: string, bytes: number, sha256: string): void {
  let size: number;
  try {
    size = statSync(file).size;
  } catch (cause) {
    throw new ReidbError('model_missing', `model '${id}': file ${file} does not exist`, {
      input: file,
      cause,
    });
  }

  if (size !== bytes) {
    throw new ReidbError(
      'model_corrupt',
      `model '${id}': file ${file} has ${size} bytes, the manifest expects ${bytes}`,
      { input: file },
    );
  }

  const digest = createHash('sha256').update(readFileSync(file)).digest('hex');
  if (digest !== sha256) {
    throw new ReidbError(
      'model_corrupt',
      `model '${id}': file ${file} has sha256 ${digest}, the manifest expects ${sha256}`,
      { input: file },
    );
  }
}
