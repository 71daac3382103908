/**
 * Non-learned fusion of the appearance embedding and the geometric descriptor into the one
 * vector the gallery indexes. The learned gated MLP of METHOD.md step 7 needs training data
 * and weights; these fusions need neither and are the baselines it must beat.
 *
 * Concat fusion: the L2-normalised appearance embedding a, the z-scored and L2-normalised
 * geometry g, weighted and concatenated as [sqrt(1 - w) a ; sqrt(w) g]. The result has unit
 * length, and the cosine similarity of two fused vectors is exactly
 *
 *   cos(fused1, fused2) = (1 - w) cos(a1, a2) + w cos(g1, g2),
 *
 * so w is the share of the score that geometry decides. The default w = 0.01 is small on
 * purpose: geometry alone separates people weakly (geometry-only cosine reached ROC AUC 0.70
 * with the reference statistics below, 0.66 without centring, on 2,742 lfw_multi pairs), and
 * the dlib appearance cosines of different people sit close together (about 0.89 against 0.95
 * for the same person), so even a small w lets geometry noise outvote appearance. Measured on
 * celeba_wild (60 identities, 479 faces, all pairs; the tuning set, not an evaluation set),
 * ROC AUC by w: 0 -> 0.9875, 0.005 -> 0.9874, 0.01 -> 0.9872, 0.02 -> 0.9863, 0.05 -> 0.9790,
 * 0.1 -> 0.9513. No w above 0 helped: the non-learned combination only records geometry in
 * the vector at a cost kept below 0.001 AUC; the learned gated fusion is where it must earn
 * its place. See docs/GEOMETRY.md for how the geometry figures were measured.
 */
import { ReidbError } from '../errors.ts';
import { GEOMETRY_DIM } from './geometry.ts';

/** Turns an appearance embedding and a geometric descriptor into the gallery's vector. */
export interface Fusion {
  /** Stable id recorded in the gallery; vectors of different ids must never be compared. */
  readonly id: string;
  /** Length of the fused vector. */
  readonly dim: number;
  /** The L2-normalised fused vector; throws invalid_argument on a wrong length or NaN. */
  fuse(appearance: Float32Array, geometry: Float32Array): Float32Array;
}

/** Per-feature mean and standard deviation of the geometric descriptor (GEOMETRY_DIM each). */
export interface GeometryStats {
  mean: Float32Array;
  std: Float32Array;
}

/** Default geometry weight w: the share of the fused cosine that geometry contributes. */
export const DEFAULT_GEOMETRY_WEIGHT = 0.01;

/**
 * Reference statistics of the geometric descriptor: mean and sample standard deviation of
 * each feature over all 700 faces of ../shared/data/lfw_distractors (one photo each of 700
 * LFW people; every photo gave a face), measured with the BlazeFace detector and Face Mesh
 * (src/face, wasm backend) and geometricDescriptor, highest-scoring face per photo. See
 * docs/GEOMETRY.md for the procedure. These people are not in lfw_multi, so the statistics
 * carry no information about the identities evaluated there.
 */
const REFERENCE_MEAN: readonly number[] = Object.freeze([
  0.76401, 0.77027, 0.26626, 0.2267, 0.36177, 0.59223, 1.9195, 2.6651, 2.2223, 2.2426, 2.0065,
  1.804, 1.5712, 1.2751, 1.4286, 0.55591, 1.7995, 0.44505, 1.2788, 0.55813, 0.67506, 0.86595,
  0.87244, 1.5736, 1.2613, 1.353, 0.44494, 0.44539, 0.13125, 0.13087, 0.78277, 0.78447, 0.3265,
  0.32684, 0.85724, 0.85805, 1.1195, 1.1133, 1.9255, 1.9271, 1.2422, 1.2415, 0.98911, 0.99252,
  0.71263, 0.70942, 0.8415, 0.84532, 1.0313, 1.0309, 2.0059, 2.5839, 1.5081, 3.0524, 2.3882, 2.2197,
  1.6256, 1.2583, 2.2124, 1.0279, 1.0569, 1.7678, 1.8435, 1.4446, 1.1132, 2.3718, 2.3668, 0.53156,
  0.52975, 2.5357, 2.539, 0.66473, 0.66515, 1.4345, 1.4341, 2.0447, 2.0434, 1.0041, 0.99854, 1.0046,
  1.0018, 1.0014, 0.99485, 1.0013, 1.0005, 1.0037, 0.99573, 1.0072, 1.0007, 1.0031, 1.0022, 1.0043,
  1.0031, 0.99883, 0.88876, 1.9205, 0.88742, 1.9315, 0.85525, 1.8954, 0.85524, 1.8947, 0.9427,
  0.94693, 0.94338, 0.94188, 0.93057, 1.0056, 0.93141, 1.0005, 0.70712, 2.904, 0.74837, 2.3682,
  0.84647, 1.9758, 0.84558, 1.9811, 0.92017, 1.6492, 0.91952, 1.626, 0.9486, 1.1406, 0.98837,
  0.45372,
]);

const REFERENCE_STD: readonly number[] = Object.freeze([
  0.056798, 0.045258, 0.01527, 0.030199, 0.10668, 0.057782, 0.1127, 0.14651, 0.078746, 0.075837,
  0.090072, 0.08549, 0.079623, 0.073606, 0.009606, 0.010849, 0.032565, 0.019751, 0.054241, 0.046642,
  0.042523, 0.11221, 0.042456, 0.041183, 0.048591, 0.09496, 0.019778, 0.019538, 0.024122, 0.023845,
  0.033941, 0.034322, 0.036054, 0.035925, 0.064535, 0.068805, 0.098838, 0.098757, 0.057829,
  0.059531, 0.058706, 0.062161, 0.042984, 0.042719, 0.048866, 0.048674, 0.065099, 0.067901,
  0.068987, 0.067505, 0.093102, 0.05456, 0.0673, 0.068708, 0.046063, 0.052733, 0.038428, 0.075345,
  0.033604, 0.072234, 0.096482, 0.088147, 0.10917, 0.041411, 0.043752, 0.066728, 0.071018, 0.095073,
  0.095445, 0.049919, 0.04959, 0.17132, 0.17216, 0.055409, 0.058117, 0.044722, 0.044237, 0.079031,
  0.046086, 0.070488, 0.03912, 0.039218, 0.030423, 0.031817, 0.048061, 0.022368, 0.021981, 0.077826,
  0.043588, 0.051993, 0.034257, 0.076325, 0.077023, 0.028587, 0.012643, 0.074824, 0.013524, 0.07807,
  0.010941, 0.057355, 0.010119, 0.052782, 0.0085535, 0.061681, 0.0085904, 0.06194, 0.010664,
  0.071442, 0.010248, 0.068884, 0.030159, 0.11533, 0.034959, 0.17098, 0.026567, 0.13002, 0.026112,
  0.12759, 0.016224, 0.17627, 0.017262, 0.20196, 0.0064082, 0.083065, 0.0028568, 0.040285,
]);

/**
 * The built-in reference statistics (fresh arrays, free to modify): the default of
 * createConcatFusion. Without centring, every face's geometry points nearly the same way
 * and cos(g1, g2) would be close to 1 for any two faces.
 */
export function referenceGeometryStats(): GeometryStats {
  return { mean: Float32Array.from(REFERENCE_MEAN), std: Float32Array.from(REFERENCE_STD) };
}

/**
 * Standard deviations below this are raised to it, so a feature that never varies in the
 * reference set is not blown up into noise by a division by almost zero.
 */
const MIN_STD = 1e-6;

function invalid(message: string, input?: string): ReidbError {
  return new ReidbError('invalid_argument', message, { input });
}

/** Checks an embedding dimension. */
function checkDim(appearanceDim: number): void {
  if (!Number.isInteger(appearanceDim) || appearanceDim < 1) {
    const message = `appearanceDim must be a positive integer, got ${appearanceDim}`;
    throw invalid(message, 'appearanceDim');
  }
}

/** Checks length and finiteness of one input vector. */
function checkVector(vector: Float32Array, dim: number, what: string): void {
  if (!(vector instanceof Float32Array) || vector.length !== dim) {
    const got = vector instanceof Float32Array ? `${vector.length}` : typeof vector;
    throw invalid(`${what} must be a Float32Array of length ${dim}, got ${got}`, what);
  }
  for (const value of vector) {
    if (!Number.isFinite(value)) throw invalid(`${what} holds a non-finite value (${value})`, what);
  }
}

/** Euclidean length, accumulated in float64. */
function l2(vector: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < vector.length; i++) sum += vector[i] * vector[i];
  return Math.sqrt(sum);
}

/**
 * Per-feature mean and (sample) standard deviation of geometric descriptors, for
 * createConcatFusion's `geometryStats`. Needs at least 2 descriptors of GEOMETRY_DIM.
 */
export function computeGeometryStats(descriptors: readonly Float32Array[]): GeometryStats {
  if (descriptors.length < 2) throw invalid('computeGeometryStats needs at least 2 descriptors');
  descriptors.forEach((descriptor, i) => checkVector(descriptor, GEOMETRY_DIM, `descriptor ${i}`));

  const mean = new Float64Array(GEOMETRY_DIM);
  for (const descriptor of descriptors) {
    for (let j = 0; j < GEOMETRY_DIM; j++) mean[j] += descriptor[j] / descriptors.length;
  }

  const variance = new Float64Array(GEOMETRY_DIM);
  for (const descriptor of descriptors) {
    for (let j = 0; j < GEOMETRY_DIM; j++) {
      variance[j] += (descriptor[j] - mean[j]) ** 2 / (descriptors.length - 1);
    }
  }
  return { mean: Float32Array.from(mean), std: Float32Array.from(variance, Math.sqrt) };
}

/** A short, stable fingerprint of the statistics (FNV-1a over their float32 bytes). */
function statsFingerprint(stats: GeometryStats): string {
  let hash = 0x811c9dc5;
  for (const array of [stats.mean, stats.std]) {
    const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
    for (const byte of bytes) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/** w as the id writes it: two decimals when that is exact, else all the digits it needs. */
function formatWeight(weight: number): string {
  const fixed = weight.toFixed(2);
  return Number(fixed) === weight ? fixed : String(weight);
}

/**
 * Concat fusion (see the module comment). `appearanceDim` is the embedder's dimension;
 * `geometryWeight` w in [0, 1] (default 0.01); `geometryStats` the per-feature mean and std
 * used to z-score the geometry (default referenceGeometryStats(), from 700 LFW faces). The
 * output has appearanceDim + 126 dimensions. The id is `concat-v1:w=0.01`, with
 * `:stats=<hash>` appended when the statistics are not the built-in ones, so galleries built
 * with other statistics never mix.
 */
export function createConcatFusion(options: {
  appearanceDim: number;
  geometryWeight?: number;
  geometryStats?: { mean: Float32Array; std: Float32Array };
}): Fusion {
  const { appearanceDim } = options;
  const weight = options.geometryWeight ?? DEFAULT_GEOMETRY_WEIGHT;
  checkDim(appearanceDim);
  if (typeof weight !== 'number' || !(weight >= 0 && weight <= 1)) {
    throw invalid(`geometryWeight must be in [0, 1], got ${weight}`, 'geometryWeight');
  }

  // Statistics: checked, and std floored so no feature divides by zero.
  const stats = options.geometryStats ?? referenceGeometryStats();
  checkVector(stats.mean, GEOMETRY_DIM, 'geometryStats.mean');
  checkVector(stats.std, GEOMETRY_DIM, 'geometryStats.std');
  if (stats.std.some((value) => value < 0)) {
    throw invalid('geometryStats.std must not be negative', 'geometryStats.std');
  }
  const mean = Float64Array.from(stats.mean);
  const std = Float64Array.from(stats.std, (value) => Math.max(value, MIN_STD));

  const appearanceScale = Math.sqrt(1 - weight);
  const geometryScale = Math.sqrt(weight);
  const fingerprint = statsFingerprint(stats);
  const builtIn = fingerprint === statsFingerprint(referenceGeometryStats());
  const statsPart = builtIn ? '' : `:stats=${fingerprint}`;
  const id = `concat-v1:w=${formatWeight(weight)}${statsPart}`;
  const dim = appearanceDim + GEOMETRY_DIM;

  return Object.freeze({
    id,
    dim,
    fuse(appearance: Float32Array, geometry: Float32Array): Float32Array {
      checkVector(appearance, appearanceDim, 'appearance');
      checkVector(geometry, GEOMETRY_DIM, 'geometry');

      // Appearance block: unit length, then weighted.
      const appearanceNorm = l2(appearance);
      if (!(appearanceNorm > 0)) {
        throw invalid('appearance embedding has zero length', 'appearance');
      }
      const fused = new Float64Array(dim);
      for (let i = 0; i < appearanceDim; i++) {
        fused[i] = (appearanceScale * appearance[i]) / appearanceNorm;
      }

      // Geometry block: z-scored, unit length, then weighted. Skipped entirely at w = 0.
      if (weight > 0) {
        const z = Float64Array.from(geometry, (value, j) => (value - mean[j]) / std[j]);
        const geometryNorm = l2(z);
        if (!(geometryNorm > 0)) {
          const message = 'geometry equals the reference mean exactly; it has no direction';
          throw invalid(message, 'geometry');
        }
        for (let j = 0; j < GEOMETRY_DIM; j++) {
          fused[appearanceDim + j] = (geometryScale * z[j]) / geometryNorm;
        }
      }

      // Unit length already in exact arithmetic; normalised again against rounding.
      const length = l2(fused);
      return Float32Array.from(fused, (value) => value / length);
    },
  });
}

/**
 * Appearance only: the L2-normalised appearance embedding, geometry ignored. id
 * `appearance-v1`, dim = appearanceDim.
 */
export function createAppearanceOnlyFusion(appearanceDim: number): Fusion {
  checkDim(appearanceDim);

  return Object.freeze({
    id: 'appearance-v1',
    dim: appearanceDim,
    fuse(appearance: Float32Array, _geometry: Float32Array): Float32Array {
      checkVector(appearance, appearanceDim, 'appearance');
      const length = l2(appearance);
      if (!(length > 0)) throw invalid('appearance embedding has zero length', 'appearance');
      return Float32Array.from(appearance, (value) => value / length);
    },
  });
}
