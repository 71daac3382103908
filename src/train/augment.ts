/**
 * Image augmentations for extracting the fusion's training features (METHOD.md, "Training the
 * fusion"): rotation, scale, horizontal flip, Gaussian noise, motion blur, HSV jitter and
 * synthetic occlusion (src/train/occlusion.ts), and a sampler that composes them.
 *
 * Every function is pure: it returns a new image and leaves its input alone; randomness comes
 * only from a `random` argument (uniform in [0, 1), e.g. seededRandom(seed)), so the same seed
 * gives the same output. Coordinates are image pixels with the convention of src/face/align.ts
 * (pixel (i, j) covers [i, i + 1) x [j, j + 1)); angles are degrees; intensities are 0-255
 * unless a parameter says it is in units of the [0, 1] intensity range.
 */

import { ReidbError } from '../errors.ts';
import { type Affine, applyAffine, warpAffine } from '../face/align.ts';
import type { Box, FaceMesh, Point2, RgbImage } from '../types.ts';
import {
  boxCoverage,
  clipBox,
  drawMask,
  drawSunglasses,
  gaussian,
  type MaskOptions,
  noiseSource,
  occludePatch,
  occludeRegion,
  type PatchSource,
} from './occlusion.ts';
import { mulberry32 } from './sampler.ts';

/**
 * A seeded uniform generator in [0, 1): the sampler's mulberry32 (32-bit state held in the
 * closure). The same seed always gives the same sequence.
 */
export function seededRandom(seed: number): () => number {
  return mulberry32(seed);
}

// ---------------------------------------------------------------------------------------------
// Geometric

/**
 * The affine (image pixels -> image pixels) that rotates by `degrees` about the image centre;
 * positive turns the content clockwise on screen (y points down), the sense in which a
 * positive head-pose roll turns the eye line (src/face/pose.ts).
 */
export function rotationTransform(width: number, height: number, degrees: number): Affine {
  const t = (degrees * Math.PI) / 180;
  const cos = Math.cos(t);
  const sin = Math.sin(t);
  const cx = width / 2;
  const cy = height / 2;
  return [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy];
}

/** The affine that scales by `factor` (> 1 zooms in) about the image centre. */
export function scaleTransform(width: number, height: number, factor: number): Affine {
  return [factor, 0, (width / 2) * (1 - factor), 0, factor, (height / 2) * (1 - factor)];
}

/** The affine that mirrors left and right: x' = width - x. */
export function flipTransform(width: number): Affine {
  return [-1, 0, width, 0, 1, 0];
}

/** The affine that applies `first`, then `second`. */
export function composeAffine(second: Affine, first: Affine): Affine {
  const [a, b, c, d, e, f] = first;
  const [A, B, C, D, E, F] = second;
  return [
    A * a + B * d,
    A * b + B * e,
    A * c + B * f + C,
    D * a + E * d,
    D * b + E * e,
    D * c + E * f + F,
  ];
}

/**
 * Rotates the image by `degrees` about its centre (clockwise on screen for positive), same size,
 * bilinear; corners that come from outside the image are black. Map the landmarks with
 * transformLandmarks(mesh, rotationTransform(width, height, degrees)).
 */
export function rotate(image: RgbImage, degrees: number): RgbImage {
  return warp(image, rotationTransform(image.width, image.height, degrees));
}

/**
 * Scales the image by `factor` (e.g. 0.8-1.2; > 1 zooms in) about its centre, same size,
 * bilinear; a border that comes from outside the image is black. Landmarks:
 * transformLandmarks(mesh, scaleTransform(width, height, factor)).
 */
export function scale(image: RgbImage, factor: number): RgbImage {
  if (!(factor > 0)) {
    throw new ReidbError('invalid_argument', `scale: factor must be > 0, got ${factor}`);
  }
  return warp(image, scaleTransform(image.width, image.height, factor));
}

/** Mirrors the image left-right (exact). Landmarks: transformLandmarks(mesh, flipTransform(width)). */
export function flipHorizontal(image: RgbImage): RgbImage {
  const { width, height } = image;
  const out = new Uint8Array(image.data.length);
  for (let j = 0; j < height; j++) {
    for (let i = 0; i < width; i++) {
      const s = (j * width + i) * 3;
      const d = (j * width + width - 1 - i) * 3;
      out[d] = image.data[s];
      out[d + 1] = image.data[s + 1];
      out[d + 2] = image.data[s + 2];
    }
  }
  return { data: out, width, height, channels: 3 };
}

/**
 * The mesh moved by `affine` (as the image was): x, y mapped, z scaled by the transform's
 * linear scale (square root of |det|). Indices keep their meaning as points of the face, so
 * after a flip the subject's right-eye landmarks lie on the image's right; the occluders here
 * do not depend on sides.
 */
export function transformLandmarks(mesh: FaceMesh, affine: Affine): FaceMesh {
  const zScale = Math.sqrt(Math.abs(affine[0] * affine[4] - affine[1] * affine[3]));
  const landmarks = new Float32Array(mesh.landmarks.length);
  for (let k = 0; k + 2 < mesh.landmarks.length; k += 3) {
    const [x, y] = applyAffine(affine, [mesh.landmarks[k], mesh.landmarks[k + 1]]);
    landmarks[k] = x;
    landmarks[k + 1] = y;
    landmarks[k + 2] = mesh.landmarks[k + 2] * zScale;
  }
  return { landmarks, score: mesh.score };
}

/** The axis-aligned bounding box (pixels) of the mesh's landmarks. */
export function landmarkBox(mesh: FaceMesh): Box {
  return boundingBox(pointsOf(mesh.landmarks));
}

// ---------------------------------------------------------------------------------------------
// Photometric

/**
 * Adds independent Gaussian noise to every channel of every pixel, with standard deviation
 * `sigma` in units of the [0, 1] intensity range (0.03 = 7.65 levels of 0-255), then rounds and
 * clips to 0-255. sigma 0 returns an unchanged copy.
 */
export function gaussianNoise(image: RgbImage, sigma: number, random: () => number): RgbImage {
  if (!(sigma >= 0)) {
    throw new ReidbError('invalid_argument', `gaussianNoise: sigma must be >= 0, got ${sigma}`);
  }
  const out = new Uint8Array(image.data);
  if (sigma === 0) return { data: out, width: image.width, height: image.height, channels: 3 };

  const std = sigma * 255;
  for (let k = 0; k < out.length; k++) out[k] = clampByte(out[k] + std * gaussian(random));
  return { data: out, width: image.width, height: image.height, channels: 3 };
}

/**
 * Linear motion blur: each pixel becomes the mean of `kernel` (odd, default 5) samples spaced one
 * pixel apart along a line through it at `angleDegrees` (0 = horizontal, positive clockwise on
 * screen), sampled bilinearly with the image edge repeated.
 */
export function motionBlur(image: RgbImage, kernel = 5, angleDegrees = 0): RgbImage {
  if (!(Number.isInteger(kernel) && kernel >= 1 && kernel % 2 === 1)) {
    throw new ReidbError(
      'invalid_argument',
      `motionBlur: kernel must be an odd integer >= 1, got ${kernel}`,
    );
  }
  const { width, height, data } = image;
  const t = (angleDegrees * Math.PI) / 180;
  const offsets: Point2[] = [];
  for (let s = 0; s < kernel; s++) {
    const d = s - (kernel - 1) / 2;
    // Snap near-integer offsets so that axis-aligned blurs sample pixels exactly.
    offsets.push([snap(d * Math.cos(t)), snap(d * Math.sin(t))]);
  }

  const out = new Uint8Array(data.length);
  const acc = [0, 0, 0];
  for (let j = 0; j < height; j++) {
    for (let i = 0; i < width; i++) {
      acc[0] = acc[1] = acc[2] = 0;
      for (const [dx, dy] of offsets) sampleInto(image, i + dx, j + dy, acc);
      const o = (j * width + i) * 3;
      for (let c = 0; c < 3; c++) out[o + c] = clampByte(acc[c] / kernel);
    }
  }
  return { data: out, width, height, channels: 3 };
}

export interface HsvJitter {
  /** Hue shift, degrees (default 0). */
  hue?: number;
  /** Saturation multiplier (default 1); results are clipped to [0, 1]. */
  saturation?: number;
  /** Value (brightness) multiplier (default 1); results are clipped to 0-255. */
  value?: number;
}

/**
 * Shifts hue by `hue` degrees and multiplies saturation and value, per pixel in HSV (hexcone
 * model). Neutral parameters (0, 1, 1) return the image unchanged.
 */
export function hsvJitter(image: RgbImage, jitter: HsvJitter): RgbImage {
  const hueShift = jitter.hue ?? 0;
  const satFactor = jitter.saturation ?? 1;
  const valFactor = jitter.value ?? 1;
  if (!(satFactor >= 0 && valFactor >= 0 && Number.isFinite(hueShift))) {
    throw new ReidbError(
      'invalid_argument',
      'hsvJitter: saturation and value factors must be >= 0',
    );
  }

  const out = new Uint8Array(image.data.length);
  const src = image.data;
  for (let k = 0; k < src.length; k += 3) {
    const r = src[k];
    const g = src[k + 1];
    const b = src[k + 2];

    // RGB -> HSV: h in [0, 360), s in [0, 1], v in [0, 255].
    const max = Math.max(r, g, b);
    const min = Math.min(r, g, b);
    const chroma = max - min;
    let h = 0;
    if (chroma > 0) {
      if (max === r) h = 60 * (((g - b) / chroma + 6) % 6);
      else if (max === g) h = 60 * ((b - r) / chroma + 2);
      else h = 60 * ((r - g) / chroma + 4);
    }
    const s = max > 0 ? chroma / max : 0;

    // Jitter, then back to RGB.
    const h2 = (((h + hueShift) % 360) + 360) % 360;
    const s2 = Math.min(1, s * satFactor);
    const v2 = Math.min(255, max * valFactor);
    const c2 = v2 * s2;
    const x2 = c2 * (1 - Math.abs(((h2 / 60) % 2) - 1));
    const m = v2 - c2;
    const sector = Math.floor(h2 / 60) % 6;
    const [r1, g1, b1] =
      sector === 0
        ? [c2, x2, 0]
        : sector === 1
          ? [x2, c2, 0]
          : sector === 2
            ? [0, c2, x2]
            : sector === 3
              ? [0, x2, c2]
              : sector === 4
                ? [x2, 0, c2]
                : [c2, 0, x2];
    out[k] = clampByte(r1 + m);
    out[k + 1] = clampByte(g1 + m);
    out[k + 2] = clampByte(b1 + m);
  }
  return { data: out, width: image.width, height: image.height, channels: 3 };
}

// ---------------------------------------------------------------------------------------------
// Sampler

/** Ranges and probabilities of randomAugmentation; METHOD.md fixes the ranges, not the odds. */
export interface AugmentationOptions {
  /** Probability of a rotation, drawn uniformly in [-maxRotation, maxRotation] degrees. */
  rotationProbability: number;
  maxRotation: number;
  /** Probability of a scale, drawn uniformly in scaleRange (factor). */
  scaleProbability: number;
  scaleRange: [number, number];
  flipProbability: number;
  /** Probability of Gaussian noise of `noiseSigma` ([0, 1] intensity units). */
  noiseProbability: number;
  noiseSigma: number;
  /** Probability of motion blur with `blurKernel` taps at a uniform angle in [0, 180). */
  blurProbability: number;
  blurKernel: number;
  /** Probability of HSV jitter: hue +-maxHue degrees, saturation and value x (1 +- max...). */
  hsvProbability: number;
  maxHue: number;
  maxSaturation: number;
  maxValue: number;
  /** Probability of a random patch covering a uniform share of the face box in patchCoverage. */
  patchProbability: number;
  patchCoverage: [number, number];
  /** Of the patches: share Poisson-blended (the rest alpha-blended), share filled from texture. */
  poissonProbability: number;
  textureProbability: number;
  /** Probabilities of a drawn mask or sunglasses (only with a mesh; at most one occluder). */
  maskProbability: number;
  sunglassesProbability: number;
  /**
   * Face box (pixels, before the geometric transforms) for the patch; default: the bounding box
   * of the mesh landmarks, or the whole image without a mesh (e.g. an aligned crop).
   */
  box?: Box;
}

/** Defaults: METHOD.md's ranges; the probabilities are reidb's choice. */
export const DEFAULT_AUGMENTATION: Readonly<AugmentationOptions> = Object.freeze({
  rotationProbability: 0.5,
  maxRotation: 20,
  scaleProbability: 0.5,
  scaleRange: Object.freeze([0.8, 1.2]) as [number, number],
  flipProbability: 0.5,
  noiseProbability: 0.3,
  noiseSigma: 0.03,
  blurProbability: 0.2,
  blurKernel: 5,
  hsvProbability: 0.5,
  maxHue: 10,
  maxSaturation: 0.3,
  maxValue: 0.2,
  patchProbability: 0.25,
  patchCoverage: Object.freeze([0.2, 0.4]) as [number, number],
  poissonProbability: 0.5,
  textureProbability: 0.7,
  maskProbability: 0.15,
  sunglassesProbability: 0.1,
});

export interface AugmentationResult {
  image: RgbImage;
  /**
   * What was applied, in order, from: rotate, scale, flip, patch, mask, sunglasses, hsv, blur,
   * noise.
   */
  applied: string[];
  /** The parameters drawn, e.g. { 'rotate.degrees': 12.5, 'patch.blend': 'poisson' }. */
  details: Record<string, number | string>;
  /** The mesh moved with the geometric transforms (null without one). */
  mesh: FaceMesh | null;
}

type Rgb = [number, number, number];
/** Mask colours the sampler picks from: light blue, white, pale green; dark grey, navy, red, beige. */
const SURGICAL_COLOURS: Rgb[] = [
  [150, 196, 222],
  [236, 238, 240],
  [168, 214, 190],
];
const CLOTH_COLOURS: Rgb[] = [
  [40, 42, 50],
  [70, 90, 140],
  [150, 40, 50],
  [200, 190, 170],
];

/**
 * One random augmentation of a face image: geometric (rotation, scale, flip; one combined
 * warp), then occlusion (a patch, or with a mesh a drawn mask or sunglasses; at most one), then
 * photometric (HSV jitter, motion blur, noise), each with its probability in `options`
 * (defaults DEFAULT_AUGMENTATION). Returns the image, the names of what was applied and the
 * drawn parameters, so training can tag each sample.
 */
export function randomAugmentation(
  image: RgbImage,
  mesh: FaceMesh | null,
  random: () => number,
  options: Partial<AugmentationOptions> = {},
): AugmentationResult {
  const o: AugmentationOptions = { ...DEFAULT_AUGMENTATION, ...options };
  const applied: string[] = [];
  const details: Record<string, number | string> = {};
  const uniform = (lo: number, hi: number): number => lo + (hi - lo) * random();
  const { width, height } = image;

  // Geometric: compose rotate, scale and flip into one warp so the image is resampled once.
  let affine: Affine = [1, 0, 0, 0, 1, 0];
  if (random() < o.rotationProbability) {
    const degrees = uniform(-o.maxRotation, o.maxRotation);
    affine = composeAffine(rotationTransform(width, height, degrees), affine);
    applied.push('rotate');
    details['rotate.degrees'] = degrees;
  }
  if (random() < o.scaleProbability) {
    const factor = uniform(o.scaleRange[0], o.scaleRange[1]);
    affine = composeAffine(scaleTransform(width, height, factor), affine);
    applied.push('scale');
    details['scale.factor'] = factor;
  }
  if (random() < o.flipProbability) {
    affine = composeAffine(flipTransform(width), affine);
    applied.push('flip');
  }
  let out = applied.length > 0 ? warp(image, affine) : copyImage(image);
  const moved = mesh ? transformLandmarks(mesh, affine) : null;

  // Occlusion: one draw picks at most one occluder.
  const pick = random();
  const withMesh = moved !== null;
  const maskP = withMesh ? o.maskProbability : 0;
  const glassesP = withMesh ? o.sunglassesProbability : 0;
  if (pick < o.patchProbability) {
    const box = o.box
      ? boundingBox(corners(o.box).map((p) => applyAffine(affine, p)))
      : moved
        ? landmarkBox(moved)
        : { x: 0, y: 0, width, height };
    const coverage = uniform(o.patchCoverage[0], o.patchCoverage[1]);
    const blend = random() < o.poissonProbability ? 'poisson' : 'alpha';
    const fill = random() < o.textureProbability ? 'texture' : 'noise';
    const patch = occludePatch(out, box, coverage, random, { blend, fill });
    out = patch.image;
    applied.push('patch');
    details['patch.coverage'] = boxCoverage(patch.mask, width, box);
    details['patch.blend'] = blend;
    details['patch.fill'] = patch.fill;
  } else if (moved && pick < o.patchProbability + maskP) {
    const style: MaskOptions['style'] = random() < 0.5 ? 'surgical' : 'cloth';
    const palette = style === 'surgical' ? SURGICAL_COLOURS : CLOTH_COLOURS;
    const colour = palette[Math.floor(random() * palette.length)];
    out = drawMask(out, moved, { style, colour }).image;
    applied.push('mask');
    details['mask.style'] = style;
  } else if (moved && pick < o.patchProbability + maskP + glassesP) {
    out = drawSunglasses(out, moved).image;
    applied.push('sunglasses');
  }

  // Photometric, last, so occluders are lit and degraded like the face.
  if (random() < o.hsvProbability) {
    const jitter = {
      hue: uniform(-o.maxHue, o.maxHue),
      saturation: uniform(1 - o.maxSaturation, 1 + o.maxSaturation),
      value: uniform(1 - o.maxValue, 1 + o.maxValue),
    };
    out = hsvJitter(out, jitter);
    applied.push('hsv');
    details['hsv.hue'] = jitter.hue;
    details['hsv.saturation'] = jitter.saturation;
    details['hsv.value'] = jitter.value;
  }
  if (random() < o.blurProbability) {
    const angle = uniform(0, 180);
    out = motionBlur(out, o.blurKernel, angle);
    applied.push('blur');
    details['blur.angle'] = angle;
  }
  if (random() < o.noiseProbability) {
    out = gaussianNoise(out, o.noiseSigma, random);
    applied.push('noise');
    details['noise.sigma'] = o.noiseSigma;
  }

  return { image: out, applied, details, mesh: moved };
}

// ---------------------------------------------------------------------------------------------
// Occlusion levels for the benchmark

export interface OcclusionLevel {
  /** Requested share of the face box, e.g. 0.4. */
  level: number;
  image: RgbImage;
  /** width x height, 1 on the patch. */
  mask: Uint8Array;
  /** Measured share of the face box (clipped to the image) under the patch. */
  coverage: number;
}

export interface OcclusionLevelOptions {
  /** Shares of the face box (default [0, 0.2, 0.4, 0.6]). */
  levels?: number[];
  /** Default 'alpha'. */
  blend?: 'alpha' | 'poisson';
}

/**
 * The same face at several occlusion levels (default 0, 20, 40 and 60 % of the face box), for a
 * per-occlusion results table. The patches are nested: each keeps the box's aspect ratio, grows
 * about one random centre (clamped into the box) and is cut from one smooth-noise field drawn
 * once, so a higher level hides everything a lower one does. Level 0 is an unchanged copy.
 */
export function syntheticOcclusionLevels(
  image: RgbImage,
  box: Box,
  random: () => number,
  options: OcclusionLevelOptions = {},
): OcclusionLevel[] {
  const levels = options.levels ?? [0, 0.2, 0.4, 0.6];
  const clipped = clipBox(box, image);
  if (clipped.width < 1 || clipped.height < 1) {
    throw new ReidbError(
      'invalid_argument',
      'syntheticOcclusionLevels: the face box lies outside the image',
    );
  }

  // One centre and one noise field for every level.
  const cx = clipped.x + random() * clipped.width;
  const cy = clipped.y + random() * clipped.height;
  const field = noiseSource(clipped.width, clipped.height, random);

  return levels.map((level) => {
    if (!(level >= 0 && level <= 1)) {
      throw new ReidbError(
        'invalid_argument',
        `syntheticOcclusionLevels: level ${level} is not in [0, 1]`,
      );
    }
    if (level === 0) {
      const mask = new Uint8Array(image.width * image.height);
      return { level, image: copyImage(image), mask, coverage: 0 };
    }

    const side = Math.sqrt(level);
    const w = Math.min(clipped.width, Math.max(1, Math.round(side * box.width)));
    const area = level * box.width * box.height;
    const h = Math.min(clipped.height, Math.max(1, Math.round(area / w)));
    const x = clamp(Math.round(cx - w / 2), clipped.x, clipped.x + clipped.width - w);
    const y = clamp(Math.round(cy - h / 2), clipped.y, clipped.y + clipped.height - h);
    const region: Box = { x, y, width: w, height: h };
    const source = cropSource(field, x - clipped.x, y - clipped.y, w + 2, h + 2);
    const result = occludeRegion(image, region, source, { blend: options.blend ?? 'alpha' });
    return { level, ...result, coverage: boxCoverage(result.mask, image.width, box) };
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers

function copyImage(image: RgbImage): RgbImage {
  return {
    data: new Uint8Array(image.data),
    width: image.width,
    height: image.height,
    channels: 3,
  };
}

function warp(image: RgbImage, affine: Affine): RgbImage {
  return warpAffine(image, affine, image.width, image.height);
}

/** Adds the bilinear sample at index-space (x, y) (pixel centres at integers, edge repeated). */
function sampleInto(image: RgbImage, x: number, y: number, acc: number[]): void {
  const { width, height, data } = image;
  const xc = x < 0 ? 0 : x > width - 1 ? width - 1 : x;
  const yc = y < 0 ? 0 : y > height - 1 ? height - 1 : y;
  const x0 = Math.floor(xc);
  const y0 = Math.floor(yc);
  const x1 = Math.min(width - 1, x0 + 1);
  const y1 = Math.min(height - 1, y0 + 1);
  const fx = xc - x0;
  const fy = yc - y0;
  const p00 = (y0 * width + x0) * 3;
  const p10 = (y0 * width + x1) * 3;
  const p01 = (y1 * width + x0) * 3;
  const p11 = (y1 * width + x1) * 3;
  for (let c = 0; c < 3; c++) {
    const top = data[p00 + c] + (data[p10 + c] - data[p00 + c]) * fx;
    const bottom = data[p01 + c] + (data[p11 + c] - data[p01 + c]) * fx;
    acc[c] += top + (bottom - top) * fy;
  }
}

/** A width x height window of a PatchSource, starting at (x, y) in its coordinates. */
function cropSource(
  field: PatchSource,
  x: number,
  y: number,
  width: number,
  height: number,
): PatchSource {
  const data = new Float32Array(width * height * 3);
  for (let j = 0; j < height; j++) {
    const s = ((y + j) * field.width + x) * 3;
    data.set(field.data.subarray(s, s + width * 3), j * width * 3);
  }
  return { data, width, height };
}

function pointsOf(landmarks: Float32Array): Point2[] {
  const points: Point2[] = [];
  for (let k = 0; k + 2 < landmarks.length; k += 3) points.push([landmarks[k], landmarks[k + 1]]);
  return points;
}

function boundingBox(points: Point2[]): Box {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (const [x, y] of points) {
    minX = Math.min(minX, x);
    minY = Math.min(minY, y);
    maxX = Math.max(maxX, x);
    maxY = Math.max(maxY, y);
  }
  return { x: minX, y: minY, width: maxX - minX, height: maxY - minY };
}

function corners(box: Box): Point2[] {
  return [
    [box.x, box.y],
    [box.x + box.width, box.y],
    [box.x, box.y + box.height],
    [box.x + box.width, box.y + box.height],
  ];
}

function snap(v: number): number {
  const r = Math.round(v);
  return Math.abs(v - r) < 1e-9 ? r : v;
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

function clampByte(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
}
