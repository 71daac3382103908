import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import type { Engine } from '../engine/pool.ts';
import { ReidbError } from '../errors.ts';
import { DATABASE_FILE, openGallery, type Gallery } from '../gallery/gallery.ts';
import { DEPLOYMENT_FILE, openDeployment, type Deployment } from '../policy/deployment.ts';
import { str } from './args.ts';
import type { CommandContext } from './main.ts';
import { fusionModelCopyPath } from './options.ts';

/**
 * The gallery a command works on: --db DIR (SQLite and index files in DIR), else the default
 * gallery of this checkout, with its SQLite file in .reidb/ and its index files in indexes/.
 * `mustExist` (search, erase, refuse) refuses a folder without a gallery instead of making one.
 * `--new-deployment` accepts a gallery whose deployment.sqlite is lost (see openGallery).
 */
export function openCliGallery(
  ctx: Pick<CommandContext, 'args' | 'logger'>,
  options: { mustExist?: boolean } = {},
): Promise<Gallery> {
  const db = str(ctx.args, 'db');
  const common = {
    logger: ctx.logger,
    mustExist: options.mustExist,
    acceptNewDeployment: ctx.args.flags['new-deployment'] === true,
  };
  if (db !== undefined) return openGallery(db, common);
  return openGallery(path.join(REPO_ROOT, '.reidb'), {
    ...common,
    indexDir: path.join(REPO_ROOT, 'indexes'),
  });
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The gallery directory a command works on: --db DIR, else the checkout's .reidb/. */
export function cliGalleryDir(args: CommandContext['args']): string {
  return str(args, 'db') ?? path.join(REPO_ROOT, '.reidb');
}

/**
 * Every folder that holds files of the command's gallery: DIR for --db DIR, else the
 * checkout's .reidb/ and indexes/. No file reidb writes on request may go into one of them.
 */
export function cliGalleryFolders(args: CommandContext['args']): string[] {
  const db = str(args, 'db');
  if (db !== undefined) return [db];
  return [path.join(REPO_ROOT, '.reidb'), path.join(REPO_ROOT, 'indexes')];
}

/**
 * Opens only the deployment (deployment.sqlite: keys, audit trail, ledger) of the command's
 * gallery directory, without the gallery or its lock, so that it works while `reidb serve`
 * holds the gallery. Without `mustExist` the directory and the file are created when absent.
 */
export function openCliDeployment(
  ctx: Pick<CommandContext, 'args' | 'logger'>,
  options: { mustExist?: boolean } = {},
): Deployment {
  // Making a new deployment beside a gallery that has lost its own would let that gallery
  // open with an empty ledger later: the gallery's own open refuses that, and so does this.
  const dir = cliGalleryDir(ctx.args);
  // A mistyped --db would otherwise get a deployment of its own, and keys nobody can use.
  if (str(ctx.args, 'db') !== undefined && !existsSync(dir)) {
    throw new ReidbError(
      'gallery_not_found',
      `no folder ${dir}: give the folder of an existing gallery, or create it first (mkdir)`,
      { input: dir },
    );
  }
  const galleryFile = path.join(dir, DATABASE_FILE);
  if (hadDeployment(galleryFile) && !existsSync(path.join(dir, DEPLOYMENT_FILE))) {
    if (ctx.args.flags['new-deployment'] !== true) {
      throw new ReidbError(
        'gallery_corrupt',
        `${dir} holds a gallery but no ${DEPLOYMENT_FILE}: restore it from its backup (it holds ` +
          'the erasure ledger). Only if it is lost for good, pass --new-deployment',
        { input: path.join(dir, DEPLOYMENT_FILE) },
      );
    }
  }
  return openDeployment(dir, { logger: ctx.logger, mustExist: options.mustExist });
}

/**
 * Whether the gallery.sqlite at `file` has run with a deployment: its schema reached version
 * 2, which made one. A gallery from before that (or none at all) may get its first.
 */
function hadDeployment(file: string): boolean {
  if (!existsSync(file)) return false;
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      return db.prepare('SELECT 1 FROM schema_migrations WHERE version = 2').get() !== undefined;
    } finally {
      db.close();
    }
  } catch {
    // Unreadable: let the gallery's own open report it; do not make a deployment beside it.
    return true;
  }
}

/**
 * Keeps a copy of a trained fusion model inside the gallery directory, so that later
 * commands on the gallery find the model its vectors came from without --fusion.
 */
export function keepFusionModel(gallery: Gallery, engine: Engine, modelFile?: string): void {
  if (!modelFile) return;
  const copy = fusionModelCopyPath(gallery.dir, engine.identity.fusionId);
  if (path.resolve(copy) === path.resolve(modelFile) || existsSync(copy)) return;
  mkdirSync(path.dirname(copy), { recursive: true });
  copyFileSync(modelFile, copy);
}
