/**
 * Data shapes shared by the pipeline stages. Coordinates are pixels of the decoded image
 * (origin top-left, x right, y down) unless a field says otherwise; angles are degrees.
 */

/** A decoded image: 8-bit sRGB, 3 channels, interleaved RGB, row-major. */
export interface RgbImage {
  data: Uint8Array;
  /** Pixels. */
  width: number;
  /** Pixels. */
  height: number;
  channels: 3;
}

/** Axis-aligned box in pixels. */
export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export type Point2 = [number, number];

/** One face found by the detector. */
export interface Detection {
  box: Box;
  /** Detector keypoints in pixels (BlazeFace: right eye, left eye, nose, mouth, right ear, left ear). */
  keypoints: Point2[];
  /** Detector confidence in [0, 1]. */
  score: number;
}

/** MediaPipe Face Mesh output for one face. */
export interface FaceMesh {
  /**
   * 468 landmarks, flattened [x0, y0, z0, x1, ...]: x, y in image pixels, z a relative depth
   * in the same pixel scale (smaller is closer to the camera), as MediaPipe defines it.
   */
  landmarks: Float32Array;
  /** The mesh model's face-present confidence in [0, 1]. */
  score: number;
}

/** Head pose in degrees. Yaw > 0: the face turns towards the image's left edge (its own right). */
export interface HeadPose {
  yaw: number;
  pitch: number;
  roll: number;
}

export type AlignMode = 'mesh' | 'raw';

/** A face taken through the whole pipeline up to (not including) the gallery. */
export interface FaceFeatures {
  detection: Detection;
  mesh: FaceMesh;
  pose: HeadPose;
  /** Quality in [0, 1]: combines detector and mesh scores, face size and pose. */
  quality: number;
  /** L2-normalised appearance embedding (the Embedder's dimension). */
  appearance: Float32Array;
  /** The 126 geometric features (src/features/geometry.ts), not normalised. */
  geometry: Float32Array;
  /** L2-normalised vector the gallery indexes (src/features/fusion.ts). */
  fused: Float32Array;
}
