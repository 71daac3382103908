/**
 * Dense face landmarks with MediaPipe Face Mesh (468 points, 192x192 input), as packaged by
 * @vladmandic/human. The face is cut out of the image as a square, upright crop around the
 * detection (rotated by the eye line so that roll does not reach the network), and the
 * landmarks are mapped back to the original image's pixels.
 */

import { ReidbError } from '../errors.ts';
import { resolveModel } from '../models/registry.ts';
import { initTf, loadGraphModelFromFile, tf, type TfBackend } from '../tf/runtime.ts';
import type { Detection, FaceMesh, Point2, RgbImage } from '../types.ts';
import { type Affine, invertAffine, warpAffine } from './align.ts';

export interface FaceMesherOptions {
  backend: TfBackend;
  /** Folder holding facemesh.json/.bin (default: the @vladmandic/human package). */
  modelDir?: string;
  /**
   * Runs a second pass on a crop built from the first pass's own landmarks (default false).
   * On 205 LFW photos it moved landmarks by 0.7 % of the forehead-chin height on average and
   * left dlib verification AUC unchanged (0.9995 vs 0.9994), so it is not worth the second
   * inference by default.
   */
  refine?: boolean;
}

export interface FaceMesher {
  readonly modelId: string;
  /** 468 landmarks of the face `detection` points at, in image pixels. */
  estimate(image: RgbImage, detection: Detection): Promise<FaceMesh>;
  /** Releases the model's weights. The mesher cannot be used afterwards. */
  close(): void;
}

/**
 * Mesh score below which the engine should treat a detection as "no face". Measured: all 717
 * LFW faces scored above 0.99; pointing04 faces averaged 1.00 up to |pan| 45 (minimum 0.75) and
 * 0.97-0.98 at |pan| 60, falling to 0.75-0.82 at |pan| 90 (true profiles, minimum 0.003);
 * flat, noise and gradient crops scored about 1e-4. 0.5 keeps nearly every face up to 60
 * degrees of yaw and rejects non-faces by a wide margin.
 */
export const DEFAULT_MIN_MESH_SCORE = 0.5;

/** The detection box is squared and enlarged by this factor, as Face Mesh was trained. */
export const MESH_CROP_ENLARGE = 1.5;

const MODEL_ID = 'facemesh';
const INPUT_SIZE = 192;
const LANDMARKS = 468;
/** Eye landmarks that define the roll of the refinement crop (subject's right, left outer corner). */
const RIGHT_EYE_OUTER = 33;
const LEFT_EYE_OUTER = 263;

/**
 * Loads Face Mesh and returns a mesher. Fails with model_missing / model_corrupt naming the
 * model file when the weights are absent, altered or unreadable.
 */
export async function createFaceMesher(options: FaceMesherOptions): Promise<FaceMesher> {
  await initTf(options.backend);
  // initTf returns early while a concurrent call is still starting the backend; wait for it.
  await tf.ready();
  const model = await loadGraphModelFromFile(resolveModel(MODEL_ID, options.modelDir).entryPath);
  const refine = options.refine ?? false;
  let closed = false;

  return {
    modelId: MODEL_ID,

    async estimate(image: RgbImage, detection: Detection): Promise<FaceMesh> {
      if (closed) throw new ReidbError('internal', 'face mesher used after close()');
      if (detection.keypoints.length < 2) {
        throw new ReidbError(
          'invalid_argument',
          'estimate: the detection needs its two eye keypoints',
        );
      }

      const box = detection.box;
      const centre: Point2 = [box.x + box.width / 2, box.y + box.height / 2];
      const side = Math.max(box.width, box.height) * MESH_CROP_ENLARGE;
      const [rightEye, leftEye] = detection.keypoints;
      let mesh = runOnCrop(model, image, cropTransform(centre, side, eyeAngle(rightEye, leftEye)));

      if (refine) {
        const second = landmarkCrop(mesh.landmarks);
        mesh = runOnCrop(model, image, cropTransform(second.centre, second.side, second.angle));
      }
      return mesh;
    },

    close(): void {
      if (closed) return;
      closed = true;
      model.dispose();
    },
  };
}

/** Angle (radians) of the line from the subject's right eye to the left eye, image y down. */
function eyeAngle(rightEye: Point2, leftEye: Point2): number {
  return Math.atan2(leftEye[1] - rightEye[1], leftEye[0] - rightEye[0]);
}

/**
 * Affine from image pixels to the 192x192 crop: centre -> crop centre, `side` pixels -> 192,
 * and a rotation by -angle so that the eye line becomes horizontal.
 */
function cropTransform(centre: Point2, side: number, angle: number): Affine {
  const s = INPUT_SIZE / side;
  const cos = Math.cos(-angle) * s;
  const sin = Math.sin(-angle) * s;
  const h = INPUT_SIZE / 2;
  return [
    cos,
    -sin,
    h - cos * centre[0] + sin * centre[1],
    sin,
    cos,
    h - sin * centre[0] - cos * centre[1],
  ];
}

/** Square crop around the landmarks' upright bounding box, for the refinement pass. */
function landmarkCrop(landmarks: Float32Array): { centre: Point2; side: number; angle: number } {
  const angle = Math.atan2(
    landmarks[LEFT_EYE_OUTER * 3 + 1] - landmarks[RIGHT_EYE_OUTER * 3 + 1],
    landmarks[LEFT_EYE_OUTER * 3] - landmarks[RIGHT_EYE_OUTER * 3],
  );
  const cos = Math.cos(-angle);
  const sin = Math.sin(-angle);
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < LANDMARKS; i++) {
    const x = landmarks[i * 3];
    const y = landmarks[i * 3 + 1];
    const u = cos * x - sin * y;
    const v = sin * x + cos * y;
    x0 = Math.min(x0, u);
    x1 = Math.max(x1, u);
    y0 = Math.min(y0, v);
    y1 = Math.max(y1, v);
  }
  const cu = (x0 + x1) / 2;
  const cv = (y0 + y1) / 2;
  // Back from the upright frame to image pixels (inverse rotation).
  const centre: Point2 = [cos * cu + sin * cv, -sin * cu + cos * cv];
  return { centre, side: Math.max(x1 - x0, y1 - y0) * MESH_CROP_ENLARGE, angle };
}

/** Cuts the crop, runs the network and maps the landmarks back to image pixels. */
function runOnCrop(model: tf.GraphModel, image: RgbImage, toCrop: Affine): FaceMesh {
  const crop = warpAffine(image, toCrop, INPUT_SIZE, INPUT_SIZE);
  const input = new Float32Array(crop.data.length);
  for (let i = 0; i < input.length; i++) input[i] = crop.data[i] / 255;

  const x = tf.tensor4d(input, [1, INPUT_SIZE, INPUT_SIZE, 3]);
  let outputs: tf.Tensor[] = [];
  let raw: Float32Array;
  let flag: number;
  try {
    const result = model.execute(x);
    outputs = Array.isArray(result) ? result : [result];
    const points = outputs.find((o) => o.shape[o.shape.length - 1] === LANDMARKS * 3);
    const present = outputs.find((o) => o.shape[o.shape.length - 1] === 1);
    if (!points || !present) {
      const shapes = outputs.map((o) => JSON.stringify(o.shape)).join(', ');
      throw new ReidbError('model_mismatch', `Face Mesh outputs have unexpected shapes ${shapes}`);
    }
    raw = points.dataSync() as Float32Array;
    flag = (present.dataSync() as Float32Array)[0];
  } finally {
    x.dispose();
    for (const o of outputs) o.dispose();
  }

  // Crop pixels -> image pixels; z has no offset and takes the crop's scale.
  const [a, b, c, d, e, f] = invertAffine(toCrop);
  const zScale = Math.sqrt(Math.abs(a * e - b * d));
  const landmarks = new Float32Array(LANDMARKS * 3);
  for (let i = 0; i < LANDMARKS; i++) {
    const u = raw[i * 3];
    const v = raw[i * 3 + 1];
    landmarks[i * 3] = a * u + b * v + c;
    landmarks[i * 3 + 1] = d * u + e * v + f;
    landmarks[i * 3 + 2] = raw[i * 3 + 2] * zScale;
  }
  return { landmarks, score: faceScore(flag) };
}

/**
 * The face-present output is already a probability, not a logit: it reads about 1.0 on faces and
 * 1e-4 on noise, never outside [0, 1]. A sigmoid on top would squash faces to 0.73.
 */
function faceScore(probability: number): number {
  return Number.isFinite(probability) ? Math.max(0, Math.min(1, probability)) : 0;
}
