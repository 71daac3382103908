/**
 * The canonical frontal face template that 'mesh' alignment (src/face/align.ts) warps onto.
 *
 * frontal-template.json holds the mean (x, y) of all 468 MediaPipe Face Mesh landmarks over
 * near-frontal real faces, in a face frame where the forehead point (10) is at (0, -0.5), the
 * chin (152) at (0, 0.5) and x runs to the image right; see the file's "source" field for how
 * it was made. FRAMING places that face frame inside the square crop.
 */

import type { Point2 } from '../types.ts';
import template from './frontal-template.json' with { type: 'json' };

/**
 * Landmarks the alignment fits (MediaPipe Face Mesh indices): eye corners and lids, brows, the
 * nose bridge, tip and wings, mouth corners and lip centres, chin, forehead and the cheek / jaw
 * outline. Chosen for being stable under expression; the outline points help fix the scale.
 */
export const ALIGN_LANDMARKS: readonly number[] = [
  33, 133, 362, 263, 159, 145, 386, 374, 105, 334, 168, 6, 1, 2, 98, 327, 61, 291, 0, 17, 152, 10,
  234, 454, 172, 397,
];

/** Where the face sits in the aligned crop, as fractions of the crop side. */
export interface Framing {
  /** Forehead (10) to chin (152) distance as a fraction of the crop side. */
  faceHeight: number;
  /** Vertical position of the forehead-chin midpoint, 0 = top edge, 1 = bottom edge. */
  centreY: number;
}

/**
 * Framing for the dlib ResNet face embedder (150x150 input). Picked by grid search over
 * faceHeight 0.6-1.0 and centreY 0.40-0.55 on 205 LFW photos of 40 identities not used for the
 * template (all 438 same / 20472 different pairs, Euclidean distance of dlib descriptors):
 * ROC AUC rises from 0.92 (0.6, 0.55) to a plateau of 0.9994-0.9997 for faceHeight 0.85-1.0 at
 * centreY 0.45; 0.9 / 0.45 sits in the middle of it (AUC 0.9994, mean distance same 0.446,
 * different 0.827). The best 'raw' box crop (enlarge 1.15) reached AUC 0.9944 (0.487 / 0.796).
 */
export const FRAMING: Framing = { faceHeight: 0.9, centreY: 0.45 };

/** Mean frontal landmark (x, y) of one mesh index in the face frame described above. */
export function templateLandmark(index: number): Point2 {
  const p = (template.landmarks as number[][])[index];
  return [p[0], p[1]];
}

/** Template positions (pixels of a size x size crop) of ALIGN_LANDMARKS, in that order. */
export function templatePoints(size: number, framing: Framing = FRAMING): Point2[] {
  return ALIGN_LANDMARKS.map((k) => {
    const [x, y] = templateLandmark(k);
    return [
      (0.5 + x * framing.faceHeight) * size,
      (framing.centreY + y * framing.faceHeight) * size,
    ];
  });
}
