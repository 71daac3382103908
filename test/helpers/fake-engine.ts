import type { Analysis } from '../../src/engine/pipeline.ts';
import type { Engine } from '../../src/engine/pool.ts';
import type { GalleryConfig } from '../../src/gallery/gallery.ts';

/** A small pipeline identity for fake engines: 8-D vectors, no fusion. */
export const FAKE_IDENTITY: GalleryConfig = {
  embedderId: 'fake',
  appearanceDim: 8,
  fusionId: 'appearance-v1',
  fusedDim: 8,
  alignMode: 'mesh',
};

/** A vector source giving each call a different 8-D vector (one component high in turn). */
export function distinctVectors(): () => Float32Array {
  let n = 0;
  return () => {
    const hot = n++ % 8;
    return Float32Array.from({ length: 8 }, (_, i) => (i === hot ? 1 : 0.1));
  };
}

/**
 * An engine without models: every image holds one 100 x 100 px face whose appearance and
 * fused vector is `vectorFor(name)` (the file path or upload name), found after `delayMs`.
 * The identity defaults to FAKE_IDENTITY and the vectors to distinctVectors().
 */
export function fakeEngine(
  options: {
    identity?: GalleryConfig;
    vectorFor?: (name: string) => Float32Array;
    delayMs?: number;
  } = {},
): Engine {
  const vectorFor = options.vectorFor ?? distinctVectors();
  const analyse = async (name: string) => {
    if (options.delayMs) await new Promise((resolve) => setTimeout(resolve, options.delayMs));
    const v = vectorFor(name);
    const analysis: Analysis = {
      faces: [
        {
          detection: { box: { x: 0, y: 0, width: 100, height: 100 }, keypoints: [], score: 0.9 },
          mesh: { landmarks: new Float32Array(468 * 3), score: 1 },
          pose: { yaw: 0, pitch: 0, roll: 0 },
          quality: 0.9,
          appearance: v,
          geometry: new Float32Array(126).fill(0.5),
          fused: v,
        },
      ],
      rejected: [],
      width: 100,
      height: 100,
      stageMs: {},
    };
    return { analysis, decodeMs: 0 };
  };
  return {
    identity: options.identity ?? FAKE_IDENTITY,
    detectorId: 'fake',
    meshId: 'fake',
    workers: 2,
    analyseFile: analyse,
    analyseBuffer: (_bytes, name) => analyse(name),
    close: async () => {},
  };
}
