/**
 * Face detection with MediaPipe BlazeFace, the 256x256 "back camera" model as packaged by
 * @vladmandic/human. The image is letterboxed (aspect kept, black padding) to 256x256, the
 * network scores 896 anchors, and the boxes and 6 keypoints are decoded, merged by weighted
 * non-max suppression and mapped back to the original image's pixels.
 */

import { ReidbError } from '../errors.ts';
import { resolveModel } from '../models/registry.ts';
import { initTf, loadGraphModelFromFile, tf, type TfBackend } from '../tf/runtime.ts';
import type { Box, Detection, Point2, RgbImage } from '../types.ts';
import { type Affine, warpAffine } from './align.ts';

export interface FaceDetectorOptions {
  backend: TfBackend;
  /** Folder holding blazeface.json/.bin (default: the @vladmandic/human package). */
  modelDir?: string;
  /** Minimum detection score in [0, 1] (default DEFAULT_MIN_DETECTION_SCORE = 0.5). */
  minScore?: number;
  /** IoU above which two boxes are one face (default 0.3, as MediaPipe uses). */
  iouThreshold?: number;
  /** Most faces returned, highest score first (default 20). */
  maxFaces?: number;
}

export interface FaceDetector {
  readonly modelId: string;
  /** All faces in `image`, highest score first; boxes clipped to the image (pixels). */
  detect(image: RgbImage): Promise<Detection[]>;
  /** Releases the model's weights. The detector cannot be used afterwards. */
  close(): void;
}

/**
 * Default score threshold. The best face of every one of 717 LFW photos (lfw_multi, 140
 * identities) scored at least 0.70 (5th percentile 0.81), pointing04 faces averaged 0.81-0.87
 * at every pan from -90 to +90; flat, noise and gradient images give no detection at 0.5.
 * Low enough to keep small and turned faces; the mesh score (src/face/mesh.ts) then rejects
 * what is not a face. 11 % of LFW photos also hold a second detection above 0.5, mostly real
 * people in the background.
 */
export const DEFAULT_MIN_DETECTION_SCORE = 0.5;
export const DEFAULT_IOU_THRESHOLD = 0.3;
export const DEFAULT_MAX_FACES = 20;

const MODEL_ID = 'blazeface-back';
const INPUT_SIZE = 256;
const KEYPOINTS = 6;
/** Values each anchor regresses: box centre offset (2), box size (2), 6 keypoints (12). */
const REGRESSORS = 16;
/** Raw logits are clipped like MediaPipe does before the sigmoid. */
const SCORE_CLIP = 100;

/**
 * Loads BlazeFace and returns a detector. Fails with model_missing / model_corrupt naming the
 * model file when the weights are absent, altered or unreadable.
 */
export async function createFaceDetector(options: FaceDetectorOptions): Promise<FaceDetector> {
  const minScore = options.minScore ?? DEFAULT_MIN_DETECTION_SCORE;
  const iouThreshold = options.iouThreshold ?? DEFAULT_IOU_THRESHOLD;
  const maxFaces = options.maxFaces ?? DEFAULT_MAX_FACES;
  checkUnit('minScore', minScore);
  checkUnit('iouThreshold', iouThreshold);
  if (!(Number.isInteger(maxFaces) && maxFaces >= 1)) {
    throw new ReidbError(
      'invalid_argument',
      `maxFaces must be a positive integer, got ${maxFaces}`,
      {
        input: 'maxFaces',
      },
    );
  }

  await initTf(options.backend);
  // initTf returns early while a concurrent call is still starting the backend; wait for it.
  await tf.ready();
  const model = await loadGraphModelFromFile(resolveModel(MODEL_ID, options.modelDir).entryPath);
  const anchors = generateAnchors();
  let closed = false;

  return {
    modelId: MODEL_ID,

    async detect(image: RgbImage): Promise<Detection[]> {
      if (closed) throw new ReidbError('internal', 'face detector used after close()');
      checkImage(image);

      const { input, toInput } = letterbox(image);
      const { scores, regressors } = await runModel(model, input);
      const candidates = decode(scores, regressors, anchors, minScore);
      const faces = weightedNms(candidates, iouThreshold).slice(0, maxFaces);
      return faces.map((face) => toImage(face, toInput, image));
    },

    close(): void {
      if (closed) return;
      closed = true;
      model.dispose();
    },
  };
}

/** A decoded anchor in input (256x256) pixels: box corners, keypoints and score. */
interface Candidate {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  keypoints: number[];
  score: number;
}

function checkUnit(name: string, value: number): void {
  if (!(value >= 0 && value <= 1)) {
    throw new ReidbError('invalid_argument', `${name} must be in [0, 1], got ${value}`, {
      input: name,
    });
  }
}

function checkImage(image: RgbImage): void {
  if (
    !(image.width > 0 && image.height > 0) ||
    image.channels !== 3 ||
    image.data.length !== image.width * image.height * 3
  ) {
    throw new ReidbError(
      'invalid_argument',
      `detect: expected an 8-bit RGB image, got ${image.width}x${image.height}x${image.channels}` +
        ` with ${image.data.length} bytes`,
    );
  }
}

/**
 * Anchor centres in input pixels: a 16x16 grid (stride 16) with 2 anchors per cell, then an
 * 8x8 grid (stride 32) with 6 per cell, 896 in all, row-major, as the model was trained.
 */
function generateAnchors(): Float32Array {
  const layers = [
    { stride: 16, perCell: 2 },
    { stride: 32, perCell: 6 },
  ];
  const out: number[] = [];
  for (const { stride, perCell } of layers) {
    const cells = Math.ceil(INPUT_SIZE / stride);
    for (let row = 0; row < cells; row++) {
      for (let col = 0; col < cells; col++) {
        for (let k = 0; k < perCell; k++) out.push((col + 0.5) * stride, (row + 0.5) * stride);
      }
    }
  }
  return Float32Array.from(out);
}

/**
 * Letterboxes the image into the 256x256 input: scaled to fit, centred, black padding.
 * Large images are first box-filtered down so that bilinear sampling does not alias.
 * Returns the input values in [-1, 1] and the affine from image to input pixels.
 */
function letterbox(image: RgbImage): { input: Float32Array; toInput: Affine } {
  const scale = INPUT_SIZE / Math.max(image.width, image.height);
  const factor = Math.floor(1 / scale);
  const source = factor >= 2 ? boxDownsample(image, factor) : image;

  // Scale of the (possibly reduced) source into the input, and centring offsets.
  const s = INPUT_SIZE / Math.max(source.width, source.height);
  const dx = (INPUT_SIZE - source.width * s) / 2;
  const dy = (INPUT_SIZE - source.height * s) / 2;
  const warped = warpAffine(source, [s, 0, dx, 0, s, dy], INPUT_SIZE, INPUT_SIZE);

  const input = new Float32Array(warped.data.length);
  for (let i = 0; i < input.length; i++) input[i] = warped.data[i] / 127.5 - 1;

  // Image -> input: source pixel coordinates are image coordinates divided by the factor.
  const k = source === image ? s : s / factor;
  return { input, toInput: [k, 0, dx, 0, k, dy] };
}

/** Averages factor x factor blocks; a trailing partial block is dropped. */
function boxDownsample(image: RgbImage, factor: number): RgbImage {
  const width = Math.floor(image.width / factor);
  const height = Math.floor(image.height / factor);
  const out = new Uint8Array(width * height * 3);
  const area = factor * factor;
  const sums = new Float64Array(width * 3);
  for (let j = 0; j < height; j++) {
    sums.fill(0);
    for (let r = 0; r < factor; r++) {
      const row = (j * factor + r) * image.width * 3;
      for (let i = 0; i < width; i++) {
        for (let q = 0; q < factor; q++) {
          const p = row + (i * factor + q) * 3;
          sums[i * 3] += image.data[p];
          sums[i * 3 + 1] += image.data[p + 1];
          sums[i * 3 + 2] += image.data[p + 2];
        }
      }
    }
    for (let i = 0; i < width * 3; i++) out[j * width * 3 + i] = Math.round(sums[i] / area);
  }
  return { data: out, width, height, channels: 3 };
}

/** Runs the network and returns per-anchor logits (896) and regressors (896 x 16). */
async function runModel(
  model: tf.GraphModel,
  input: Float32Array,
): Promise<{ scores: Float32Array; regressors: Float32Array }> {
  const x = tf.tensor4d(input, [1, INPUT_SIZE, INPUT_SIZE, 3]);
  let outputs: tf.Tensor[] = [];
  try {
    const result = model.execute(x);
    outputs = Array.isArray(result) ? result : [result];

    // Four outputs: scores and regressors of the 512 stride-16 and 384 stride-32 anchors.
    const pick = (anchors: number, depth: number): Float32Array => {
      const t = outputs.find((o) => o.shape[1] === anchors && o.shape[2] === depth);
      if (!t) {
        const shapes = outputs.map((o) => JSON.stringify(o.shape)).join(', ');
        throw new ReidbError(
          'model_mismatch',
          `BlazeFace outputs have unexpected shapes ${shapes}`,
        );
      }
      return t.dataSync() as Float32Array;
    };
    const scores = new Float32Array(896);
    scores.set(pick(512, 1), 0);
    scores.set(pick(384, 1), 512);
    const regressors = new Float32Array(896 * REGRESSORS);
    regressors.set(pick(512, REGRESSORS), 0);
    regressors.set(pick(384, REGRESSORS), 512 * REGRESSORS);
    return { scores, regressors };
  } finally {
    x.dispose();
    for (const o of outputs) o.dispose();
  }
}

/** Decodes anchors scoring at least minScore into input-pixel boxes and keypoints. */
function decode(
  logits: Float32Array,
  regressors: Float32Array,
  anchors: Float32Array,
  minScore: number,
): Candidate[] {
  const out: Candidate[] = [];
  for (let i = 0; i < logits.length; i++) {
    const logit = Math.max(-SCORE_CLIP, Math.min(SCORE_CLIP, logits[i]));
    const score = 1 / (1 + Math.exp(-logit));
    if (score < minScore) continue;

    const r = i * REGRESSORS;
    const ax = anchors[i * 2];
    const ay = anchors[i * 2 + 1];
    const cx = ax + regressors[r];
    const cy = ay + regressors[r + 1];
    const w = regressors[r + 2];
    const h = regressors[r + 3];
    const keypoints: number[] = [];
    for (let k = 0; k < KEYPOINTS; k++) {
      keypoints.push(ax + regressors[r + 4 + k * 2], ay + regressors[r + 5 + k * 2]);
    }
    out.push({ x0: cx - w / 2, y0: cy - h / 2, x1: cx + w / 2, y1: cy + h / 2, keypoints, score });
  }
  return out;
}

function iou(a: Candidate, b: Candidate): number {
  const w = Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0);
  const h = Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  const union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter;
  return union > 0 ? inter / union : 0;
}

/**
 * Weighted non-max suppression (MediaPipe's blending): candidates overlapping the best remaining
 * one by more than iouThreshold form a cluster whose boxes and keypoints are averaged, weighted
 * by score; the cluster keeps the best score. Output is sorted by score, highest first.
 */
function weightedNms(candidates: Candidate[], iouThreshold: number): Candidate[] {
  let remaining = [...candidates].sort((a, b) => b.score - a.score);
  const out: Candidate[] = [];
  while (remaining.length > 0) {
    const best = remaining[0];
    const cluster: Candidate[] = [];
    const rest: Candidate[] = [];
    for (const c of remaining) (iou(best, c) > iouThreshold || c === best ? cluster : rest).push(c);

    const total = cluster.reduce((s, c) => s + c.score, 0);
    const avg = (get: (c: Candidate) => number): number =>
      cluster.reduce((s, c) => s + get(c) * c.score, 0) / total;
    out.push({
      x0: avg((c) => c.x0),
      y0: avg((c) => c.y0),
      x1: avg((c) => c.x1),
      y1: avg((c) => c.y1),
      keypoints: best.keypoints.map((_, k) => avg((c) => c.keypoints[k])),
      score: best.score,
    });
    remaining = rest;
  }
  return out;
}

/** Maps a candidate from input to image pixels; the box is clipped to the image. */
function toImage(c: Candidate, toInput: Affine, image: RgbImage): Detection {
  const s = toInput[0];
  const dx = toInput[2];
  const dy = toInput[5];
  const x = (v: number): number => (v - dx) / s;
  const y = (v: number): number => (v - dy) / s;
  const clip = (v: number, max: number): number => Math.max(0, Math.min(max, v));

  const x0 = clip(x(c.x0), image.width);
  const y0 = clip(y(c.y0), image.height);
  const x1 = clip(x(c.x1), image.width);
  const y1 = clip(y(c.y1), image.height);
  const box: Box = { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
  const keypoints: Point2[] = [];
  for (let k = 0; k < KEYPOINTS; k++)
    keypoints.push([x(c.keypoints[k * 2]), y(c.keypoints[k * 2 + 1])]);
  return { box, keypoints, score: c.score };
}
