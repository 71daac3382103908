import { existsSync } from 'node:fs';
import path from 'node:path';

import type { FusionKind } from '../engine/pipeline.ts';
import type { EngineOptions } from '../engine/pool.ts';
import type { GalleryConfig } from '../gallery/gallery.ts';
import { ReidbError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { int, num, oneOf, str, type FlagSpec, type ParsedArgs } from './args.ts';

/** Flags shared by every command that runs the face pipeline. */
export const ENGINE_FLAGS: FlagSpec = {
  align: true,
  embedder: true,
  model: true,
  backend: true,
  workers: true,
  'geometry-weight': true,
  fusion: true,
};

/**
 * Engine options from the command line, defaulting to what the gallery was built with
 * (align mode and fusion) so that a later command cannot silently mix vectors.
 */
export function engineOptions(
  args: ParsedArgs,
  logger: Logger,
  stored: GalleryConfig | null = null,
  galleryDir?: string,
): EngineOptions {
  const embedder = oneOf(args, 'embedder', ['dlib', 'onnx-arcface'] as const);
  const model = str(args, 'model');
  if (embedder === 'onnx-arcface' && !model) {
    throw new ReidbError('invalid_argument', '--embedder onnx-arcface needs --model PATH', {
      input: '--model',
    });
  }

  const storedFusion = stored?.fusionId.startsWith('appearance') ? 'appearance' : undefined;
  const fusionArg = str(args, 'fusion');
  const fusionModel =
    fusionArg !== undefined && !FUSION_KINDS.includes(fusionArg as FusionKind)
      ? path.resolve(fusionArg)
      : fusionArg === undefined && stored && galleryDir
        ? storedFusionModel(stored.fusionId, galleryDir)
        : undefined;
  const fusion = (fusionModel ? undefined : (fusionArg as FusionKind | undefined)) ?? storedFusion;
  const storedWeight = stored ? weightFromFusionId(stored.fusionId) : undefined;

  return {
    workers: int(args, 'workers', 1, 16),
    logger,
    pipeline: {
      backend: oneOf(args, 'backend', ['wasm', 'cpu'] as const) ?? 'wasm',
      alignMode: oneOf(args, 'align', ['mesh', 'raw'] as const) ?? stored?.alignMode ?? 'mesh',
      embedder:
        embedder === 'onnx-arcface' ? { kind: 'onnx-arcface', modelPath: model } : { kind: 'dlib' },
      fusion,
      geometryWeight: num(args, 'geometry-weight', 0, 1) ?? storedWeight,
      fusionModel,
    },
  };
}

const FUSION_KINDS: readonly FusionKind[] = ['concat', 'appearance'];

/** Where a gallery keeps a copy of the trained fusion model its vectors came from. */
export function fusionModelCopyPath(galleryDir: string, fusionId: string): string {
  return path.join(galleryDir, 'fusion', `${fusionId.replace(/[^A-Za-z0-9-]/g, '_')}.reidbfus`);
}

/** The gallery's own copy of its trained fusion model; gallery_mismatch when it is gone. */
function storedFusionModel(fusionId: string, galleryDir: string): string | undefined {
  if (!fusionId.startsWith('gated-')) return undefined;
  const file = fusionModelCopyPath(galleryDir, fusionId);
  if (!existsSync(file)) {
    throw new ReidbError(
      'gallery_mismatch',
      `the gallery's vectors come from fusion model ${fusionId}, whose copy ${file} is ` +
        'missing; pass the model file with --fusion FILE',
      { input: file },
    );
  }
  return file;
}

function weightFromFusionId(id: string): number | undefined {
  const m = /w=([0-9.]+)/.exec(id);
  return m ? Number(m[1]) : undefined;
}
