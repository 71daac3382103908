import type { Box, HeadPose } from '../types.ts';

/** Face width in pixels at which the size factor of the quality score reaches 1. */
export const FULL_QUALITY_FACE_WIDTH = 64;

/**
 * Quality of one face in [0, 1]: detector score x mesh score x a size factor (face width
 * over FULL_QUALITY_FACE_WIDTH pixels, capped at 1) x a pose factor (cos of yaw and pitch,
 * floored at 0.2 so a profile still ranks above nothing). Used to pick a face when several
 * are offered and reported to the caller; it never decides alone whether a face is usable.
 */
export function faceQuality(
  box: Box,
  pose: HeadPose,
  detectorScore: number,
  meshScore: number,
): number {
  const size = Math.min(1, box.width / FULL_QUALITY_FACE_WIDTH);
  const rad = Math.PI / 180;
  const poseFactor = Math.max(0.2, Math.cos(pose.yaw * rad) * Math.cos(pose.pitch * rad));
  const q = detectorScore * meshScore * size * poseFactor;
  return Math.max(0, Math.min(1, q));
}
