import { readFileSync, writeFileSync } from 'node:fs';

import type { Engine } from '../engine/pool.ts';
import { ReidbError, toReidbError } from '../errors.ts';

/** One face's features as training and re-fusion need them (no image is kept). */
export interface CachedFace {
  /** Source file, as given. */
  file: string;
  identity: string;
  /** L2-normalised appearance embedding. */
  appearance: Float32Array;
  /** The 126 geometric features. */
  geometry: Float32Array;
  /** Degrees. */
  yaw: number;
  pitch: number;
  roll: number;
  /** In [0, 1]. */
  quality: number;
  /** Free-form labels from the dataset (e.g. mask type, augmentation applied). */
  tags?: Record<string, string>;
}

/** A set of cached features, tied to the embedder and alignment that produced them. */
export interface FeatureCache {
  version: 1;
  embedderId: string;
  alignMode: string;
  appearanceDim: number;
  geometryDim: number;
  faces: CachedFace[];
  /** Files that gave no usable face or failed, with the code. */
  skipped: { file: string; code: string }[];
}

/**
 * Runs the engine over labelled files and keeps, per image, the best face's appearance and
 * geometry features. An image without a usable face is listed in `skipped`, never invented.
 */
export async function extractFeatures(
  engine: Engine,
  items: { file: string; identity: string; tags?: Record<string, string> }[],
  onProgress?: (done: number, total: number) => void,
): Promise<FeatureCache> {
  const faces: CachedFace[] = [];
  const skipped: { file: string; code: string }[] = [];
  let done = 0;

  await Promise.all(
    items.map(async (item) => {
      try {
        const { analysis } = await engine.analyseFile(item.file);
        const face = analysis.faces[0];
        if (!face) skipped.push({ file: item.file, code: 'no_face' });
        else {
          faces.push({
            file: item.file,
            identity: item.identity,
            appearance: face.appearance,
            geometry: face.geometry,
            yaw: face.pose.yaw,
            pitch: face.pose.pitch,
            roll: face.pose.roll,
            quality: face.quality,
            ...(item.tags ? { tags: item.tags } : {}),
          });
        }
      } catch (e) {
        skipped.push({ file: item.file, code: toReidbError(e, item.file).code });
      }
      onProgress?.(++done, items.length);
    }),
  );

  // Completion order depends on the workers; sort so that a cache is reproducible.
  faces.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  skipped.sort((a, b) => (a.file < b.file ? -1 : 1));
  return {
    version: 1,
    embedderId: engine.identity.embedderId,
    alignMode: engine.identity.alignMode,
    appearanceDim: engine.identity.appearanceDim,
    geometryDim: faces[0]?.geometry.length ?? 126,
    faces,
    skipped,
  };
}

/** Writes a cache as JSON with vectors as plain arrays (a few MB for thousands of faces). */
export function writeFeatureCache(cache: FeatureCache, file: string): void {
  const plain = {
    ...cache,
    faces: cache.faces.map((f) => ({
      ...f,
      appearance: Array.from(f.appearance),
      geometry: Array.from(f.geometry),
    })),
  };
  writeFileSync(file, JSON.stringify(plain));
}

/** Reads a cache written by writeFeatureCache; invalid_argument naming the file otherwise. */
export function readFeatureCache(file: string): FeatureCache {
  let raw: any;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (cause) {
    throw new ReidbError('invalid_argument', `${file}: not a readable feature cache`, {
      input: file,
      cause,
    });
  }
  if (raw?.version !== 1 || !Array.isArray(raw.faces)) {
    throw new ReidbError('invalid_argument', `${file}: not a version 1 feature cache`, {
      input: file,
    });
  }
  return {
    ...raw,
    faces: raw.faces.map((f: any) => ({
      ...f,
      appearance: Float32Array.from(f.appearance),
      geometry: Float32Array.from(f.geometry),
    })),
  };
}
