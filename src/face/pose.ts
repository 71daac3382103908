/**
 * Head pose from the 3-D Face Mesh landmarks: a face frame built from left/right landmark
 * pairs (eyes, mouth corners, cheeks) and the forehead-chin line, read as yaw, pitch and roll.
 */

import type { FaceMesh, HeadPose } from '../types.ts';

/**
 * Sign relation to the Pointing'04 labels (data/pointing04_headpose): yaw = +pan and
 * pitch = +tilt. Yaw > 0: the face turns towards the image's left edge (its own right);
 * pitch > 0: the face looks up; roll > 0: the face's eye line turns clockwise in the image
 * (its left eye, on the image's right, lower than its right eye).
 */
export const POINTING04_SIGNS = { yawFromPan: 1, pitchFromTilt: 1 } as const;

/**
 * Pitch (degrees) that the raw face frame reads on a level face: the mesh's forehead-chin line
 * leans forward. Mean over the 1105 pointing04 images' tilt-0 faces (all pans), subtracted.
 * Pitch also comes out compressed: tilt -30 / +30 read about -14 / +18 after this correction.
 */
export const PITCH_OFFSET_DEG = -4.6;

/** Subject's right / left landmark pairs (MediaPipe indices) that define the face's x axis. */
const PAIRS: readonly [number, number][] = [
  [33, 263], // outer eye corners
  [133, 362], // inner eye corners
  [61, 291], // mouth corners
  [234, 454], // cheeks at ear level
];
const FOREHEAD = 10;
const CHIN = 152;

type Vec3 = [number, number, number];

/**
 * Yaw, pitch and roll in degrees (see POINTING04_SIGNS for the signs). x and y of the mesh are
 * image pixels and z is depth in the same scale, so the frame is metric up to MediaPipe's
 * depth estimate. Yaw is exact for a pure turn; for combined angles the three are read from
 * the frame's forward axis (yaw, pitch) and its left-right axis (roll).
 */
export function estimateHeadPose(mesh: FaceMesh): HeadPose {
  const p = (i: number): Vec3 => [
    mesh.landmarks[i * 3],
    mesh.landmarks[i * 3 + 1],
    mesh.landmarks[i * 3 + 2],
  ];

  // x axis: from the subject's right side to its left side (image right on a frontal face).
  let xAxis: Vec3 = [0, 0, 0];
  for (const [r, l] of PAIRS) xAxis = add(xAxis, sub(p(l), p(r)));
  xAxis = normalise(xAxis);

  // y axis: forehead to chin (image down), made orthogonal to x.
  let yAxis = sub(p(CHIN), p(FOREHEAD));
  yAxis = normalise(sub(yAxis, scale(xAxis, dot(yAxis, xAxis))));

  // z axis = x cross y points into the head, away from the camera (image z grows away).
  const zAxis = cross(xAxis, yAxis);

  const deg = 180 / Math.PI;
  const yaw = Math.atan2(zAxis[0], zAxis[2]) * deg;
  const pitch = Math.atan2(zAxis[1], Math.hypot(zAxis[0], zAxis[2])) * deg - PITCH_OFFSET_DEG;
  const roll = Math.atan2(xAxis[1], xAxis[0]) * deg;
  return { yaw, pitch, roll };
}

function add(a: Vec3, b: Vec3): Vec3 {
  return [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
}

function sub(a: Vec3, b: Vec3): Vec3 {
  return [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
}

function scale(a: Vec3, k: number): Vec3 {
  return [a[0] * k, a[1] * k, a[2] * k];
}

function dot(a: Vec3, b: Vec3): number {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

function cross(a: Vec3, b: Vec3): Vec3 {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

function normalise(a: Vec3): Vec3 {
  const n = Math.hypot(a[0], a[1], a[2]);
  return n > 0 ? [a[0] / n, a[1] / n, a[2] / n] : [0, 0, 0];
}
