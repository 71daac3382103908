import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import type { Engine } from '../engine/pool.ts';
import { openGallery, type Gallery } from '../gallery/gallery.ts';
import { str } from './args.ts';
import type { CommandContext } from './main.ts';
import { fusionModelCopyPath } from './options.ts';

/**
 * The gallery a command works on: --db DIR (SQLite and index files in DIR), else the default
 * gallery of this checkout, with its SQLite file in .reidb/ and its index files in indexes/.
 * `mustExist` (search, erase, refuse) refuses a folder without a gallery instead of making one.
 */
export function openCliGallery(
  ctx: Pick<CommandContext, 'args' | 'logger'>,
  options: { mustExist?: boolean } = {},
): Promise<Gallery> {
  const db = str(ctx.args, 'db');
  if (db !== undefined)
    return openGallery(db, { logger: ctx.logger, mustExist: options.mustExist });
  return openGallery(path.join(REPO_ROOT, '.reidb'), {
    logger: ctx.logger,
    indexDir: path.join(REPO_ROOT, 'indexes'),
    mustExist: options.mustExist,
  });
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

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
