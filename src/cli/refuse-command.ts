import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';

import { readFusionModel } from '../features/fusion-model-file.ts';
import { createAppearanceOnlyFusion, createConcatFusion, type Fusion } from '../features/fusion.ts';
import { createGatedFusion } from '../features/gated-fusion.ts';
import { ReidbError } from '../errors.ts';
import type { GalleryConfig } from '../gallery/gallery.ts';
import { num, required, type FlagSpec } from './args.ts';
import { openCliGallery } from './gallery-location.ts';
import type { CommandContext, CommandOutput } from './main.ts';
import { fusionModelCopyPath } from './options.ts';

export const REFUSE_FLAGS: FlagSpec = { db: true, fusion: true, 'geometry-weight': true };

/**
 * `reidb refuse`: switches a gallery to another fusion (a trained model file, `concat` or
 * `appearance`) by re-fusing the stored appearance and geometry features of every face and
 * rebuilding the index. No image is read again.
 */
export async function refuseCommand(ctx: CommandContext): Promise<CommandOutput> {
  const target = required(ctx.args, 'fusion');
  const weight = num(ctx.args, 'geometry-weight', 0, 1);
  const gallery = await openCliGallery(ctx, { mustExist: true });
  try {
    const config = gallery.config();
    if (config === null) {
      throw new ReidbError(
        'invalid_argument',
        `the gallery at ${gallery.dir} is empty; nothing to re-fuse`,
        {
          input: gallery.dir,
        },
      );
    }

    const fusion = fusionFor(target, config, weight);
    const previous = config.fusionId;
    const result = gallery.refuse(fusion);
    if (fusion.id.startsWith('gated-')) {
      const copy = fusionModelCopyPath(gallery.dir, fusion.id);
      mkdirSync(path.dirname(copy), { recursive: true });
      if (path.resolve(copy) !== path.resolve(target)) copyFileSync(target, copy);
    }
    return {
      json: { faces: result.faces, fusionId: result.fusionId, previousFusionId: previous },
      text: `re-fused ${result.faces} face(s): ${previous} -> ${result.fusionId}; index rebuilt`,
    };
  } finally {
    gallery.close();
  }
}

function fusionFor(target: string, config: GalleryConfig, weight?: number): Fusion {
  if (target === 'appearance') return createAppearanceOnlyFusion(config.appearanceDim);
  if (target === 'concat') {
    return createConcatFusion({ appearanceDim: config.appearanceDim, geometryWeight: weight });
  }

  const model = readFusionModel(target, {
    embedderId: config.embedderId,
    appearanceDim: config.appearanceDim,
  });
  if (model.header.alignMode !== config.alignMode) {
    throw new ReidbError(
      'model_mismatch',
      `fusion model ${target} was trained on '${model.header.alignMode}' alignment, the gallery ` +
        `holds '${config.alignMode}'-aligned features`,
      { input: target },
    );
  }
  return createGatedFusion(model);
}
