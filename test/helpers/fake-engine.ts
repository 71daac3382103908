import type { Analysis } from '../../src/engine/pipeline.ts';
import type { Engine } from '../../src/engine/pool.ts';
import type { GalleryConfig } from '../../src/gallery/gallery.ts';

/**
 * An engine without models: every image holds one 100 x 100 px face whose appearance and
 * fused vector is `vectorFor(name)` (the file path or upload name), found after `delayMs`.
 */
export function fakeEngine(options: {
  identity: GalleryConfig;
  vectorFor: (name: string) => Float32Array;
  delayMs?: number;
}): Engine {
  const analyse = async (name: string) => {
    if (options.delayMs) await new Promise((resolve) => setTimeout(resolve, options.delayMs));
    const v = options.vectorFor(name);
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
    identity: options.identity,
    detectorId: 'fake',
    meshId: 'fake',
    workers: 2,
    analyseFile: analyse,
    analyseBuffer: (_bytes, name) => analyse(name),
    close: async () => {},
  };
}
