/**
 * Synthetic occlusion for training the fusion (METHOD.md, "Training the fusion"): random patches
 * over the face box, alpha-blended or Poisson-blended (seamless clone), and occluders drawn from
 * Face Mesh landmarks (a face mask, sunglasses).
 *
 * Every function is pure: it returns a new image and never touches its input; randomness comes
 * only from the `random` argument (uniform in [0, 1)). Coordinates are image pixels with the
 * convention of src/face/align.ts: pixel (i, j) covers [i, i + 1) x [j, j + 1).
 */

import { ReidbError } from '../errors.ts';
import type { Box, FaceMesh, Point2, RgbImage } from '../types.ts';

/** An occluded image and where the occluder is. */
export interface Occlusion {
  image: RgbImage;
  /** width x height, 1 where the occluder's opacity is at least 0.5, else 0. */
  mask: Uint8Array;
}

/** A patch occlusion: the occluded image, its mask, the patch and what filled it. */
export interface PatchOcclusion extends Occlusion {
  /** The patch rectangle, integer pixels, inside the image. */
  region: Box;
  /** 'texture' unless no far-enough source region fitted in the image. */
  fill: 'texture' | 'noise';
}

/**
 * A colour field that fills a patch: (w + 2) x (h + 2) RGB values in [0, 255] for a w x h patch,
 * so that Poisson blending also has the guidance gradients across the patch border.
 */
export interface PatchSource {
  data: Float32Array;
  width: number;
  height: number;
}

export interface PatchOptions {
  /** 'alpha' (default): feathered alpha blend; 'poisson': seamless clone. */
  blend?: 'alpha' | 'poisson';
  /** 'texture' (default): a region from elsewhere in the same image; 'noise': smooth colour noise. */
  fill?: 'texture' | 'noise';
  /** Alpha blending only: opacity in [0, 1] of the patch centre (default 1). */
  opacity?: number;
  /** Alpha blending only: pixels over which the opacity ramps up from the border (default 2). */
  feather?: number;
  /** Texture fill only: top-left (pixels) of the source region, instead of a random one. */
  sourceAt?: Point2;
  /** Poisson blending only: solver settings. */
  poisson?: PoissonOptions;
}

export interface PoissonOptions {
  /** Upper bound on SOR sweeps (default 3000). */
  maxIterations?: number;
  /** Stops when no value changes by more than this, in intensity levels of 0-255 (default 0.05). */
  tolerance?: number;
}

/**
 * Face mask outline, MediaPipe Face Mesh indices, in order around the polygon. The top edge runs
 * from the cheek beside the right ear (234) under the eye (117, 118), along the side of the nose
 * (47) over the nose bridge (195, about halfway between the eyes' level and the nose tip) and
 * back down the other side (277, 347, 346) to 454; the rest follows the jaw line (the lower half
 * of the MediaPipe face oval: 323 ... 152 (chin) ... 93).
 */
export const MASK_OUTLINE: readonly number[] = [
  234, 117, 118, 47, 195, 277, 347, 346, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
  176, 149, 150, 136, 172, 58, 132, 93,
];

/** Outline points below the top edge (the jaw), pushed outwards so the mask wraps the chin. */
const MASK_JAW: ReadonlySet<number> = new Set(MASK_OUTLINE.slice(9));

/** Eye contours (MediaPipe): subject's right eye (image left in a frontal photo) and left eye. */
export const RIGHT_EYE_CONTOUR: readonly number[] = [
  33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
];
export const LEFT_EYE_CONTOUR: readonly number[] = [
  263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,
];

/**
 * Other landmarks the occluders use: eye corners (33/133, 362/263) fix each lens's size and
 * tilt, the face-oval points at the temples (127, 356) end the sunglasses' arms, the nose tip
 * (1) is the centre the jaw is pushed away from, and chin (152) / bridge (195) give the mask's
 * vertical axis.
 */
const EYE_OUTER_RIGHT = 33;
const EYE_INNER_RIGHT = 133;
const EYE_INNER_LEFT = 362;
const EYE_OUTER_LEFT = 263;
const TEMPLE_RIGHT = 127;
const TEMPLE_LEFT = 356;
const NOSE_TIP = 1;
const NOSE_BRIDGE = 195;
const CHIN = 152;

/** How far the jaw outline is pushed away from the nose tip, as a fraction of that distance. */
const JAW_EXPANSION = 0.06;

/** Each lens's half-width as a multiple of half the eye's corner-to-corner width. */
const LENS_WIDTH = 1.8;
/** Each lens's half-height as a fraction of its half-width. */
const LENS_ASPECT = 0.78;

export interface MaskOptions {
  /** RGB 0-255 (default: light blue for 'surgical', dark grey for 'cloth'). */
  colour?: [number, number, number];
  /** 'surgical' (default): pleats and a bright centre; 'cloth': woven texture. */
  style?: 'surgical' | 'cloth';
  /** In [0, 1] (default 1). */
  opacity?: number;
}

export interface SunglassesOptions {
  /** RGB 0-255 of the lenses (default near black). */
  colour?: [number, number, number];
  /** Lens opacity in [0, 1] (default 0.93); the frame is opaque. */
  opacity?: number;
}

/**
 * Covers `coverage` (a fraction in (0, 1], e.g. 0.2-0.4) of the face box's area with one
 * axis-aligned rectangle of random aspect ratio (1:2 to 2:1) at a random place inside the box.
 * The fill is texture copied from a region of the same image displaced by at least half the patch
 * size, or smooth colour noise when none fits (or when asked); it is alpha-blended with a
 * feathered edge, or Poisson-blended so that its border takes on the surrounding intensities.
 * The box is clipped to the image; a patch larger than the clipped box is made as large as fits.
 */
export function occludePatch(
  image: RgbImage,
  box: Box,
  coverage: number,
  random: () => number,
  options: PatchOptions = {},
): PatchOcclusion {
  if (!(coverage > 0 && coverage <= 1)) {
    throw new ReidbError(
      'invalid_argument',
      `occludePatch: coverage must be in (0, 1], got ${coverage}`,
    );
  }
  const clipped = clipBox(box, image);
  if (clipped.width < 1 || clipped.height < 1) {
    throw new ReidbError('invalid_argument', 'occludePatch: the face box lies outside the image');
  }

  // Size: area = coverage x box area, aspect ratio log-uniform in [1/2, 2], clamped to the box.
  const area = coverage * box.width * box.height;
  const aspect = Math.exp((random() * 2 - 1) * Math.LN2);
  let w = Math.max(1, Math.round(Math.sqrt(area * aspect)));
  if (w > clipped.width) w = clipped.width;
  let h = Math.max(1, Math.round(area / w));
  if (h > clipped.height) {
    h = clipped.height;
    w = Math.max(1, Math.min(clipped.width, Math.round(area / h)));
  }

  // Place it uniformly inside the clipped box.
  const x = clipped.x + Math.floor(random() * (clipped.width - w + 1));
  const y = clipped.y + Math.floor(random() * (clipped.height - h + 1));
  const region: Box = { x, y, width: w, height: h };

  let fill: 'texture' | 'noise' = options.fill ?? 'texture';
  let source: PatchSource | null = null;
  if (fill === 'texture') {
    const at = options.sourceAt ?? pickSourceRegion(image, region, random);
    if (at) source = textureSource(image, region, at);
    else fill = 'noise';
  }
  if (!source) source = noiseSource(w, h, random);

  return { ...occludeRegion(image, region, source, options), region, fill };
}

/**
 * Fills `region` (integer pixels, inside the image) from `source` ((w + 2) x (h + 2), see
 * PatchSource), alpha-blended or Poisson-blended as `options` say. The building block of
 * occludePatch and of nested occlusion levels that share one source.
 */
export function occludeRegion(
  image: RgbImage,
  region: Box,
  source: PatchSource,
  options: Pick<PatchOptions, 'blend' | 'opacity' | 'feather' | 'poisson'> = {},
): Occlusion {
  const { x, y, width: w, height: h } = region;
  const inside =
    Number.isInteger(x) &&
    Number.isInteger(y) &&
    Number.isInteger(w) &&
    Number.isInteger(h) &&
    x >= 0 &&
    y >= 0 &&
    w >= 1 &&
    h >= 1 &&
    x + w <= image.width &&
    y + h <= image.height;
  if (!inside) {
    throw new ReidbError(
      'invalid_argument',
      'occludeRegion: the region must be integer pixels inside the image',
    );
  }
  if (source.width !== w + 2 || source.height !== h + 2) {
    throw new ReidbError(
      'invalid_argument',
      `occludeRegion: a ${w}x${h} region needs a ${w + 2}x${h + 2} source, ` +
        `got ${source.width}x${source.height}`,
    );
  }

  const mask = new Uint8Array(image.width * image.height);
  for (let j = y; j < y + h; j++) mask.fill(1, j * image.width + x, j * image.width + x + w);

  const out = new Uint8Array(image.data);
  const values =
    options.blend === 'poisson' ? poissonSolve(image, region, source, options.poisson ?? {}) : null;

  // Alpha: opacity ramps over `feather` pixels from the border; Poisson: the solved values.
  const opacity = options.opacity ?? 1;
  const feather = Math.max(0, options.feather ?? 2);
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      const o = ((y + j) * image.width + x + i) * 3;
      const s = ((j + 1) * (w + 2) + i + 1) * 3;
      const p = (j * w + i) * 3;
      const edge = Math.min(i, j, w - 1 - i, h - 1 - j);
      const alpha = opacity * (feather > 0 ? Math.min(1, (edge + 1) / (feather + 1)) : 1);
      for (let c = 0; c < 3; c++) {
        const v = values ? values[p + c] : alpha * source.data[s + c] + (1 - alpha) * out[o + c];
        out[o + c] = clampByte(v);
      }
    }
  }

  return { image: { data: out, width: image.width, height: image.height, channels: 3 }, mask };
}

/**
 * The (w + 2) x (h + 2) source taken from `image` with its top-left at `at` (pixels) for a w x h
 * region; pixels outside the image repeat the nearest edge pixel.
 */
export function textureSource(image: RgbImage, region: Box, at: Point2): PatchSource {
  const width = region.width + 2;
  const height = region.height + 2;
  const data = new Float32Array(width * height * 3);
  const x0 = Math.round(at[0]);
  const y0 = Math.round(at[1]);

  for (let j = 0; j < height; j++) {
    const sy = Math.min(image.height - 1, Math.max(0, y0 + j));
    for (let i = 0; i < width; i++) {
      const sx = Math.min(image.width - 1, Math.max(0, x0 + i));
      const s = (sy * image.width + sx) * 3;
      const d = (j * width + i) * 3;
      data[d] = image.data[s];
      data[d + 1] = image.data[s + 1];
      data[d + 2] = image.data[s + 2];
    }
  }

  return { data, width, height };
}

/**
 * Smooth colour noise for a w x h region ((w + 2) x (h + 2) values): random colours on a grid of
 * cells about `cell` pixels wide (default 8), bilinearly interpolated, plus fine grain of
 * standard deviation 8 intensity levels, so the patch reads as an object rather than static.
 */
export function noiseSource(w: number, h: number, random: () => number, cell = 8): PatchSource {
  const width = w + 2;
  const height = h + 2;
  const gx = Math.ceil(width / cell) + 1;
  const gy = Math.ceil(height / cell) + 1;

  const grid = new Float32Array(gx * gy * 3);
  for (let k = 0; k < grid.length; k++) grid[k] = 30 + random() * 195;

  const data = new Float32Array(width * height * 3);
  for (let j = 0; j < height; j++) {
    const v = j / cell;
    const j0 = Math.floor(v);
    const fy = v - j0;
    for (let i = 0; i < width; i++) {
      const u = i / cell;
      const i0 = Math.floor(u);
      const fx = u - i0;
      const d = (j * width + i) * 3;
      for (let c = 0; c < 3; c++) {
        const g00 = grid[(j0 * gx + i0) * 3 + c];
        const g10 = grid[(j0 * gx + i0 + 1) * 3 + c];
        const g01 = grid[((j0 + 1) * gx + i0) * 3 + c];
        const g11 = grid[((j0 + 1) * gx + i0 + 1) * 3 + c];
        const top = g00 + (g10 - g00) * fx;
        const bottom = g01 + (g11 - g01) * fx;
        data[d + c] = top + (bottom - top) * fy + 8 * gaussian(random);
      }
    }
  }

  return { data, width, height };
}

/**
 * Seamless clone of `source` into `region`: solves the discrete Poisson equation
 * laplacian(f) = laplacian(g) inside the region, per channel, with f equal to the image on the
 * pixels just outside it (Dirichlet) and the image edge as a no-flux boundary where the region
 * touches it. Successive over-relaxation (Gauss-Seidel with the optimal factor for the region's
 * size), started from the source shifted to the border's mean. Returns w x h x 3 values.
 */
function poissonSolve(
  image: RgbImage,
  region: Box,
  source: PatchSource,
  options: PoissonOptions,
): Float64Array {
  const { x, y, width: w, height: h } = region;
  const sw = w + 2;
  const maxIterations = options.maxIterations ?? 3000;
  const tolerance = options.tolerance ?? 0.05;
  const omega = 2 / (1 + Math.sin(Math.PI / (Math.max(w, h) + 1)));
  const f = new Float64Array(w * h * 3);
  const rhs = new Float64Array(w * h * 3);
  const neighbours = new Uint8Array(w * h);
  const steps: Point2[] = [
    [1, 0],
    [-1, 0],
    [0, 1],
    [0, -1],
  ];

  // Right-hand side: the source's gradients plus the known image values just outside the patch.
  const borderSum = [0, 0, 0];
  const guideSum = [0, 0, 0];
  let borderCount = 0;
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      const p = j * w + i;
      const gp = ((j + 1) * sw + i + 1) * 3;
      for (const [di, dj] of steps) {
        const qx = x + i + di;
        const qy = y + j + dj;
        if (qx < 0 || qy < 0 || qx >= image.width || qy >= image.height) continue;
        neighbours[p]++;
        const gq = ((j + 1 + dj) * sw + i + 1 + di) * 3;
        const outside = i + di < 0 || j + dj < 0 || i + di >= w || j + dj >= h;
        for (let c = 0; c < 3; c++) {
          rhs[p * 3 + c] += source.data[gp + c] - source.data[gq + c];
          if (outside) {
            const t = image.data[(qy * image.width + qx) * 3 + c];
            rhs[p * 3 + c] += t;
            borderSum[c] += t;
            guideSum[c] += source.data[gq + c];
          }
        }
        if (outside) borderCount++;
      }
    }
  }

  // Start from the source moved to the border's mean intensity: fewer sweeps to converge.
  for (let j = 0; j < h; j++) {
    for (let i = 0; i < w; i++) {
      const gp = ((j + 1) * sw + i + 1) * 3;
      for (let c = 0; c < 3; c++) {
        const shift = borderCount > 0 ? (borderSum[c] - guideSum[c]) / borderCount : 0;
        f[(j * w + i) * 3 + c] = source.data[gp + c] + shift;
      }
    }
  }

  for (let iteration = 0; iteration < maxIterations; iteration++) {
    let change = 0;
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) {
        const p = j * w + i;
        const n = neighbours[p];
        if (n === 0) continue;
        for (let c = 0; c < 3; c++) {
          let sum = rhs[p * 3 + c];
          if (i > 0) sum += f[(p - 1) * 3 + c];
          if (i < w - 1) sum += f[(p + 1) * 3 + c];
          if (j > 0) sum += f[(p - w) * 3 + c];
          if (j < h - 1) sum += f[(p + w) * 3 + c];
          const old = f[p * 3 + c];
          const next = old + omega * (sum / n - old);
          f[p * 3 + c] = next;
          const delta = Math.abs(next - old);
          if (delta > change) change = delta;
        }
      }
    }
    if (change < tolerance) break;
  }

  return f;
}

/**
 * Draws a face mask from the mesh: a polygon from below the nose bridge (landmark 195) and under
 * the eyes to the ears, down the jaw line and under the chin (MASK_OUTLINE), filled with
 * `colour` and lightly shaded: brighter along the nose line and darker towards the cheeks, with
 * three horizontal pleats for 'surgical' and a fine weave for 'cloth'. Edges are anti-aliased
 * (2 x 2 samples per pixel). Works on a flipped mesh too (it uses no left/right semantics).
 */
export function drawMask(image: RgbImage, mesh: FaceMesh, options: MaskOptions = {}): Occlusion {
  const style = options.style ?? 'surgical';
  const colour = options.colour ?? (style === 'surgical' ? [150, 196, 222] : [58, 60, 70]);
  const opacity = options.opacity ?? 1;
  const lm = mesh.landmarks;
  const point = (k: number): Point2 => [lm[k * 3], lm[k * 3 + 1]];

  // Outline, with the jaw pushed away from the nose tip so the mask wraps under the chin.
  const tip = point(NOSE_TIP);
  const outline: Point2[] = MASK_OUTLINE.map((k) => {
    const p = point(k);
    if (!MASK_JAW.has(k)) return p;
    return [p[0] + (p[0] - tip[0]) * JAW_EXPANSION, p[1] + (p[1] - tip[1]) * JAW_EXPANSION];
  });
  const alpha = polygonCoverage(image.width, image.height, [outline]);

  // The mask's own frame: v from the bridge to the chin, u across the face.
  const top = point(NOSE_BRIDGE);
  const chin = point(CHIN);
  const length = Math.hypot(chin[0] - top[0], chin[1] - top[1]) || 1;
  const v: Point2 = [(chin[0] - top[0]) / length, (chin[1] - top[1]) / length];
  const u: Point2 = [-v[1], v[0]];
  const halfWidth = Math.max(1, halfSpread(outline, tip, u));

  const shade = (px: number, py: number): number => {
    const dx = px - tip[0];
    const dy = py - tip[1];
    const across = (dx * u[0] + dy * u[1]) / halfWidth;
    const down = ((px - top[0]) * v[0] + (py - top[1]) * v[1]) / length;
    let s = 1.05 - 0.28 * across * across;
    if (style === 'surgical') {
      for (const pleat of [0.38, 0.58, 0.78]) {
        const d = Math.abs(down - pleat) / 0.025;
        if (d < 1) s *= 0.86 + 0.14 * d;
      }
    } else {
      s *= 1 + 0.07 * Math.sin(px * 2.1) * Math.sin(py * 2.1);
    }
    return s;
  };

  return paint(image, alpha, opacity, (px, py) => {
    const s = shade(px, py);
    return [colour[0] * s, colour[1] * s, colour[2] * s];
  });
}

/**
 * Draws sunglasses from the mesh: one dark elliptical lens per eye, centred on the eye contour
 * (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR), LENS_WIDTH times the eye's corner-to-corner half-width
 * wide and tilted with the eye line (33 -> 263); a bridge between the lenses over the nose and
 * arms from the outer lens edges to the temples (127, 356). The lenses get a faint highlight
 * towards their top.
 */
export function drawSunglasses(
  image: RgbImage,
  mesh: FaceMesh,
  options: SunglassesOptions = {},
): Occlusion {
  const colour = options.colour ?? [18, 20, 24];
  const lensOpacity = options.opacity ?? 0.93;
  const lm = mesh.landmarks;
  const point = (k: number): Point2 => [lm[k * 3], lm[k * 3 + 1]];

  // Each lens: centre, half-axes along and across the eye line.
  const eyeLine = sub(point(EYE_OUTER_LEFT), point(EYE_OUTER_RIGHT));
  const eyeSpan = Math.hypot(eyeLine[0], eyeLine[1]) || 1;
  const u: Point2 = [eyeLine[0] / eyeSpan, eyeLine[1] / eyeSpan];
  const v: Point2 = [-u[1], u[0]];
  const lenses = [
    { contour: RIGHT_EYE_CONTOUR, corners: [EYE_OUTER_RIGHT, EYE_INNER_RIGHT] },
    { contour: LEFT_EYE_CONTOUR, corners: [EYE_INNER_LEFT, EYE_OUTER_LEFT] },
  ].map(({ contour, corners }) => {
    const centre = centroid(contour.map(point));
    const [a, b] = corners.map(point);
    const rx = (LENS_WIDTH * Math.hypot(b[0] - a[0], b[1] - a[1])) / 2;
    return { centre, rx, ry: rx * LENS_ASPECT };
  });

  const ellipses = lenses.map(({ centre, rx, ry }) => ellipse(centre, u, v, rx, ry, 40));
  const lensAlpha = polygonCoverage(image.width, image.height, ellipses);

  // Frame: a bridge between the lenses' upper inner edges and arms to the temples.
  const thickness = Math.max(1, 0.12 * lenses[0].ry);
  const along = (l: (typeof lenses)[number], s: number, t: number): Point2 => [
    l.centre[0] + u[0] * s * l.rx + v[0] * t * l.ry,
    l.centre[1] + u[1] * s * l.rx + v[1] * t * l.ry,
  ];
  const frame: Point2[][] = [
    thickLine(along(lenses[0], 0.9, -0.35), along(lenses[1], -0.9, -0.35), thickness),
    thickLine(along(lenses[0], -0.95, -0.3), point(TEMPLE_RIGHT), thickness),
    thickLine(along(lenses[1], 0.95, -0.3), point(TEMPLE_LEFT), thickness),
  ];
  const frameAlpha = polygonCoverage(image.width, image.height, frame);

  // One alpha: lens at its opacity, frame opaque.
  const alpha = new Float32Array(lensAlpha.length);
  for (let k = 0; k < alpha.length; k++) {
    alpha[k] = Math.max(lensAlpha[k] * lensOpacity, frameAlpha[k]);
  }

  return paint(
    image,
    alpha,
    1,
    (px, py) => {
      let lift = 0;
      for (const l of lenses) {
        const t = ((px - l.centre[0]) * v[0] + (py - l.centre[1]) * v[1]) / l.ry;
        if (t > -1 && t < -0.2) lift = Math.max(lift, 22 * (1 - Math.abs(t + 0.6) / 0.4));
      }
      return [colour[0] + lift, colour[1] + lift, colour[2] + lift];
    },
    0.5 * lensOpacity,
  );
}

/**
 * Share of `box`'s area that `mask` (width x height, 0/1) covers, both taken on the box rounded
 * to whole pixels and clipped to the image (clipBox).
 */
export function boxCoverage(mask: Uint8Array, width: number, box: Box): number {
  const clipped = clipBox(box, { width, height: mask.length / width });
  if (clipped.width < 1 || clipped.height < 1) return 0;

  let covered = 0;
  for (let j = clipped.y; j < clipped.y + clipped.height; j++) {
    for (let i = clipped.x; i < clipped.x + clipped.width; i++) covered += mask[j * width + i];
  }
  return covered / (clipped.width * clipped.height);
}

/** Integer-pixel box inside the image covering as much of `box` as lies in it. */
export function clipBox(box: Box, image: { width: number; height: number }): Box {
  const x0 = Math.max(0, Math.round(box.x));
  const y0 = Math.max(0, Math.round(box.y));
  const x1 = Math.min(image.width, Math.round(box.x + box.width));
  const y1 = Math.min(image.height, Math.round(box.y + box.height));
  return { x: x0, y: y0, width: Math.max(0, x1 - x0), height: Math.max(0, y1 - y0) };
}

/** One standard normal sample from two uniforms (Box-Muller). */
export function gaussian(random: () => number): number {
  const u = 1 - random();
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/**
 * A random top-left for a (w + 2) x (h + 2) source inside the image, displaced from the region by
 * at least half its width or half its height; null after 30 tries without one.
 */
function pickSourceRegion(image: RgbImage, region: Box, random: () => number): Point2 | null {
  const sw = region.width + 2;
  const sh = region.height + 2;
  if (sw > image.width || sh > image.height) return null;

  for (let attempt = 0; attempt < 30; attempt++) {
    const sx = Math.floor(random() * (image.width - sw + 1));
    const sy = Math.floor(random() * (image.height - sh + 1));
    const dx = Math.abs(sx + 1 - region.x);
    const dy = Math.abs(sy + 1 - region.y);
    if (dx >= region.width / 2 || dy >= region.height / 2) return [sx, sy];
  }
  return null;
}

/**
 * Per-pixel coverage in [0, 1] of the union of polygons (even-odd within each polygon), from
 * 2 x 2 samples per pixel, computed only over the polygons' bounding box.
 */
function polygonCoverage(width: number, height: number, polygons: Point2[][]): Float32Array {
  const alpha = new Float32Array(width * height);
  const offsets = [0.25, 0.75];

  for (const polygon of polygons) {
    let minX = Infinity;
    let minY = Infinity;
    let maxX = -Infinity;
    let maxY = -Infinity;
    for (const [px, py] of polygon) {
      minX = Math.min(minX, px);
      minY = Math.min(minY, py);
      maxX = Math.max(maxX, px);
      maxY = Math.max(maxY, py);
    }
    const x0 = Math.max(0, Math.floor(minX));
    const y0 = Math.max(0, Math.floor(minY));
    const x1 = Math.min(width - 1, Math.ceil(maxX));
    const y1 = Math.min(height - 1, Math.ceil(maxY));

    for (let j = y0; j <= y1; j++) {
      for (let i = x0; i <= x1; i++) {
        let hits = 0;
        for (const oy of offsets) {
          for (const ox of offsets) if (insidePolygon(polygon, i + ox, j + oy)) hits++;
        }
        const k = j * width + i;
        alpha[k] = Math.max(alpha[k], hits / 4);
      }
    }
  }

  return alpha;
}

/** Even-odd point-in-polygon test. */
function insidePolygon(polygon: Point2[], x: number, y: number): boolean {
  let inside = false;
  for (let a = 0, b = polygon.length - 1; a < polygon.length; b = a++) {
    const [xa, ya] = polygon[a];
    const [xb, yb] = polygon[b];
    if (ya > y !== yb > y && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa) inside = !inside;
  }
  return inside;
}

/**
 * Composites `colourAt` (evaluated at pixel centres) over the image with per-pixel `alpha` times
 * `opacity`; the mask marks pixels whose final opacity reaches `maskAt` (default 0.5).
 */
function paint(
  image: RgbImage,
  alpha: Float32Array,
  opacity: number,
  colourAt: (x: number, y: number) => [number, number, number],
  maskAt = 0.5,
): Occlusion {
  const out = new Uint8Array(image.data);
  const mask = new Uint8Array(image.width * image.height);

  for (let j = 0; j < image.height; j++) {
    for (let i = 0; i < image.width; i++) {
      const k = j * image.width + i;
      const a = alpha[k] * opacity;
      if (a <= 0) continue;
      const colour = colourAt(i + 0.5, j + 0.5);
      for (let c = 0; c < 3; c++) {
        out[k * 3 + c] = clampByte(a * colour[c] + (1 - a) * out[k * 3 + c]);
      }
      if (a >= maskAt) mask[k] = 1;
    }
  }

  return { image: { data: out, width: image.width, height: image.height, channels: 3 }, mask };
}

/** Polygon approximating an ellipse with half-axes rx along u and ry along v. */
function ellipse(
  centre: Point2,
  u: Point2,
  v: Point2,
  rx: number,
  ry: number,
  sides: number,
): Point2[] {
  const points: Point2[] = [];
  for (let s = 0; s < sides; s++) {
    const t = (2 * Math.PI * s) / sides;
    const a = Math.cos(t) * rx;
    const b = Math.sin(t) * ry;
    points.push([centre[0] + u[0] * a + v[0] * b, centre[1] + u[1] * a + v[1] * b]);
  }
  return points;
}

/** A quadrilateral `thickness` pixels wide along the segment a-b. */
function thickLine(a: Point2, b: Point2, thickness: number): Point2[] {
  const d = sub(b, a);
  const length = Math.hypot(d[0], d[1]) || 1;
  const n: Point2 = [(-d[1] / length) * (thickness / 2), (d[0] / length) * (thickness / 2)];
  return [
    [a[0] + n[0], a[1] + n[1]],
    [b[0] + n[0], b[1] + n[1]],
    [b[0] - n[0], b[1] - n[1]],
    [a[0] - n[0], a[1] - n[1]],
  ];
}

/** Largest |(p - origin) . axis| over the points. */
function halfSpread(points: Point2[], origin: Point2, axis: Point2): number {
  let spread = 0;
  for (const p of points) {
    const along = (p[0] - origin[0]) * axis[0] + (p[1] - origin[1]) * axis[1];
    spread = Math.max(spread, Math.abs(along));
  }
  return spread;
}

function centroid(points: Point2[]): Point2 {
  let x = 0;
  let y = 0;
  for (const p of points) {
    x += p[0];
    y += p[1];
  }
  return [x / points.length, y / points.length];
}

function sub(a: Point2, b: Point2): Point2 {
  return [a[0] - b[0], a[1] - b[1]];
}

function clampByte(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
}
