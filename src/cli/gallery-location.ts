import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { openGallery, type Gallery } from '../gallery/gallery.ts';
import { str } from './args.ts';
import type { CommandContext } from './main.ts';

/**
 * The gallery a command works on: --db DIR (SQLite and index files in DIR), else the default
 * gallery of this checkout, with its SQLite file in .reidb/ and its index files in indexes/.
 */
export function openCliGallery(ctx: Pick<CommandContext, 'args' | 'logger'>): Promise<Gallery> {
  const db = str(ctx.args, 'db');
  if (db !== undefined) return openGallery(db, { logger: ctx.logger });
  return openGallery(path.join(REPO_ROOT, '.reidb'), {
    logger: ctx.logger,
    indexDir: path.join(REPO_ROOT, 'indexes'),
  });
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

