/**
 * Geometric face descriptor (METHOD.md step 6): 126 numbers measured on the 3-D MediaPipe
 * Face Mesh (468 landmarks), built to be unchanged by translation, uniform scale and rotation
 * of the mesh, so that they describe the shape of the face and not where or how large it is.
 *
 * Four kinds of feature, all computed in 3-D (x, y and the mesh's relative depth z):
 * - distance (50): between two landmarks or landmark centroids, divided by the inter-ocular
 *   distance (IOD: eye centre to eye centre, each eye centre the mean of its 16 contour
 *   landmarks; the 468-point mesh has no pupils). Unitless, in IODs.
 * - angle (27): the angle at a vertex landmark between two others, in radians in [0, pi].
 * - ratio (17): left / right of a mirrored pair of distances (1 = symmetric). Unitless.
 * - curvature (32): along 16 landmark contours, the chord / arc-length ratio (1 = straight,
 *   unitless) and the total turning angle (radians, 0 = straight).
 *
 * "Left" and "right" are the subject's own, as MediaPipe names them (the subject's right eye
 * is on the image's left in a frontal, unmirrored photo). The full list with landmark indices
 * is in docs/GEOMETRY.md.
 *
 * Only distances and unsigned angles between labelled landmarks enter, so the descriptor is
 * also unchanged by a reflection of the coordinates. A mirrored photo is another matter: the
 * mesher then labels the subject's left as right, which swaps every left/right pair and
 * inverts every ratio.
 */
import { ReidbError } from '../errors.ts';

/** Number of geometric features. */
export const GEOMETRY_DIM = 126;

/** Landmarks in a MediaPipe Face Mesh without the iris refinement. */
const MESH_LANDMARKS = 468;

/** Ratios add this (in IODs) to numerator and denominator so a collapsed side gives no NaN. */
const RATIO_EPSILON = 1e-6;

/** The IOD must exceed this share of the mesh's largest extent, else the mesh is degenerate. */
const MIN_IOD_SHARE = 1e-6;

/** One landmark index, or several whose 3-D centroid is the point meant. */
type Anchor = number | readonly number[];

/** The two ends of a distance. */
type Segment = readonly [Anchor, Anchor];

/** chord_arc: chord / arc length (1 = straight); turning: summed turning angle, radians. */
type CurvatureMeasure = 'chord_arc' | 'turning';

type FeatureSpec =
  | { kind: 'distance'; name: string; a: Anchor; b: Anchor }
  | { kind: 'angle'; name: string; a: Anchor; vertex: Anchor; b: Anchor }
  | { kind: 'ratio'; name: string; left: Segment; right: Segment }
  | { kind: 'curvature'; name: string; measure: CurvatureMeasure; contour: readonly number[] };

/** Eye contours (16 landmarks each, MediaPipe order); their centroids are the eye centres. */
const RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246];
const LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466];
const BOTH_EYES = [...RIGHT_EYE, ...LEFT_EYE];

/** Named landmarks used below. R_ / L_ are the subject's right / left. */
const M = {
  foreheadTop: 10,
  forehead: 151,
  glabella: 9,
  nasion: 168,
  noseTip: 1,
  subnasale: 2,
  upperLip: 0,
  lowerLip: 17,
  mentolabial: 200,
  chin: 152,
  rEyeOuter: 33,
  rEyeInner: 133,
  rEyeTop: 159,
  rEyeBottom: 145,
  lEyeOuter: 263,
  lEyeInner: 362,
  lEyeTop: 386,
  lEyeBottom: 374,
  rBrowOuter: 70,
  rBrowPeak: 105,
  rBrowInner: 107,
  lBrowOuter: 300,
  lBrowPeak: 334,
  lBrowInner: 336,
  rAla: 98,
  lAla: 327,
  rNoseWing: 129,
  lNoseWing: 358,
  rMouth: 61,
  lMouth: 291,
  rFaceEdge: 234,
  lFaceEdge: 454,
  rTemple: 127,
  lTemple: 356,
  rJawUpper: 58,
  lJawUpper: 288,
  rGonion: 172,
  lGonion: 397,
  rJawLower: 136,
  lJawLower: 365,
  rChinSide: 150,
  lChinSide: 379,
  rCheek: 205,
  lCheek: 425,
} as const;

/** A mirrored pair of distances: [right side, left side]. */
type Pair = readonly [Segment, Segment];

/** Left/right distance pairs: each gives a right and a left distance, and a ratio. */
const BILATERAL_DISTANCES: readonly (readonly [string, Pair])[] = [
  [
    'eye_width',
    [
      [M.rEyeOuter, M.rEyeInner],
      [M.lEyeOuter, M.lEyeInner],
    ],
  ],
  [
    'eye_height',
    [
      [M.rEyeTop, M.rEyeBottom],
      [M.lEyeTop, M.lEyeBottom],
    ],
  ],
  [
    'brow_length',
    [
      [M.rBrowOuter, M.rBrowInner],
      [M.lBrowOuter, M.lBrowInner],
    ],
  ],
  [
    'brow_to_eye',
    [
      [M.rBrowPeak, M.rEyeTop],
      [M.lBrowPeak, M.lEyeTop],
    ],
  ],
  [
    'nose_tip_to_mouth_corner',
    [
      [M.noseTip, M.rMouth],
      [M.noseTip, M.lMouth],
    ],
  ],
  [
    'eye_to_mouth_corner',
    [
      [M.rEyeOuter, M.rMouth],
      [M.lEyeOuter, M.lMouth],
    ],
  ],
  [
    'face_edge_to_nose_tip',
    [
      [M.rFaceEdge, M.noseTip],
      [M.lFaceEdge, M.noseTip],
    ],
  ],
  [
    'gonion_to_chin',
    [
      [M.rGonion, M.chin],
      [M.lGonion, M.chin],
    ],
  ],
  [
    'eye_to_face_edge',
    [
      [M.rEyeOuter, M.rFaceEdge],
      [M.lEyeOuter, M.lFaceEdge],
    ],
  ],
  [
    'ala_to_inner_eye',
    [
      [M.rAla, M.rEyeInner],
      [M.lAla, M.lEyeInner],
    ],
  ],
  [
    'mouth_corner_to_gonion',
    [
      [M.rMouth, M.rGonion],
      [M.lMouth, M.lGonion],
    ],
  ],
  [
    'face_edge_to_gonion',
    [
      [M.rFaceEdge, M.rGonion],
      [M.lFaceEdge, M.lGonion],
    ],
  ],
];

/** Left/right pairs that enter only as a ratio. */
const RATIO_ONLY: readonly (readonly [string, Pair])[] = [
  [
    'mouth_corner_to_upper_lip',
    [
      [M.rMouth, M.upperLip],
      [M.lMouth, M.upperLip],
    ],
  ],
  [
    'mouth_corner_to_chin',
    [
      [M.rMouth, M.chin],
      [M.lMouth, M.chin],
    ],
  ],
  [
    'ala_to_nose_tip',
    [
      [M.rAla, M.noseTip],
      [M.lAla, M.noseTip],
    ],
  ],
  [
    'brow_outer_to_nasion',
    [
      [M.rBrowOuter, M.nasion],
      [M.lBrowOuter, M.nasion],
    ],
  ],
  [
    'face_edge_to_chin',
    [
      [M.rFaceEdge, M.chin],
      [M.lFaceEdge, M.chin],
    ],
  ],
];

/** An angle's [a, vertex, b]. */
type Triplet = [Anchor, Anchor, Anchor];

/** Left/right angle triplets: right first, then left. */
const BILATERAL_ANGLES: readonly (readonly [string, readonly [Triplet, Triplet]])[] = [
  [
    'gonial',
    [
      [M.rFaceEdge, M.rGonion, M.chin],
      [M.lFaceEdge, M.lGonion, M.chin],
    ],
  ],
  [
    'eye_opening',
    [
      [M.rEyeTop, M.rEyeOuter, M.rEyeBottom],
      [M.lEyeTop, M.lEyeOuter, M.lEyeBottom],
    ],
  ],
  [
    'brow_arch',
    [
      [M.rBrowOuter, M.rBrowPeak, M.rBrowInner],
      [M.lBrowOuter, M.lBrowPeak, M.lBrowInner],
    ],
  ],
  [
    'mouth_corner',
    [
      [M.upperLip, M.rMouth, M.lowerLip],
      [M.upperLip, M.lMouth, M.lowerLip],
    ],
  ],
  [
    'cheek',
    [
      [M.foreheadTop, M.rFaceEdge, M.chin],
      [M.foreheadTop, M.lFaceEdge, M.chin],
    ],
  ],
  [
    'inner_eye_to_nose_tip',
    [
      [M.rEyeOuter, M.rEyeInner, M.noseTip],
      [M.lEyeOuter, M.lEyeInner, M.noseTip],
    ],
  ],
];

/** Contours for the curvature measures, each listed from one end to the other. */
const CONTOURS: readonly (readonly [string, readonly number[]])[] = [
  ['jaw_right', [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152]],
  ['jaw_left', [454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152]],
  ['upper_face_right', [234, 127, 162, 21, 54, 103, 67, 109, 10]],
  ['upper_face_left', [454, 356, 389, 251, 284, 332, 297, 338, 10]],
  ['brow_upper_right', [70, 63, 105, 66, 107]],
  ['brow_upper_left', [300, 293, 334, 296, 336]],
  ['brow_lower_right', [46, 53, 52, 65, 55]],
  ['brow_lower_left', [276, 283, 282, 295, 285]],
  ['upper_lip', [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]],
  ['lower_lip', [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]],
  ['upper_lid_right', [33, 246, 161, 160, 159, 158, 157, 173, 133]],
  ['upper_lid_left', [263, 466, 388, 387, 386, 385, 384, 398, 362]],
  ['lower_lid_right', [33, 7, 163, 144, 145, 153, 154, 155, 133]],
  ['lower_lid_left', [263, 249, 390, 373, 374, 380, 381, 382, 362]],
  ['nose_profile', [168, 6, 197, 195, 5, 4, 1]],
  ['forehead_profile', [10, 151, 9, 8, 168]],
];

/** The feature table, in descriptor order. */
function buildSpecs(): FeatureSpec[] {
  const specs: FeatureSpec[] = [];
  const distance = (name: string, a: Anchor, b: Anchor) =>
    specs.push({ kind: 'distance', name: `dist_${name}`, a, b });
  const angle = (name: string, a: Anchor, vertex: Anchor, b: Anchor) =>
    specs.push({ kind: 'angle', name: `angle_${name}`, a, vertex, b });

  // Distances along the midline, top to bottom.
  distance('forehead_to_nasion', M.foreheadTop, M.nasion);
  distance('nasion_to_nose_tip', M.nasion, M.noseTip);
  distance('nose_tip_to_subnasale', M.noseTip, M.subnasale);
  distance('subnasale_to_upper_lip', M.subnasale, M.upperLip);
  distance('upper_to_lower_lip', M.upperLip, M.lowerLip);
  distance('lower_lip_to_chin', M.lowerLip, M.chin);
  distance('nasion_to_chin', M.nasion, M.chin);
  distance('forehead_to_chin', M.foreheadTop, M.chin);

  // Widths across the face, top to bottom.
  distance('face_width', M.rFaceEdge, M.lFaceEdge);
  distance('temple_width', M.rTemple, M.lTemple);
  distance('upper_jaw_width', M.rJawUpper, M.lJawUpper);
  distance('gonion_width', M.rGonion, M.lGonion);
  distance('lower_jaw_width', M.rJawLower, M.lJawLower);
  distance('chin_width', M.rChinSide, M.lChinSide);
  distance('outer_canthal_width', M.rEyeOuter, M.lEyeOuter);
  distance('inner_canthal_width', M.rEyeInner, M.lEyeInner);
  distance('brow_outer_width', M.rBrowOuter, M.lBrowOuter);
  distance('brow_inner_width', M.rBrowInner, M.lBrowInner);
  distance('cheek_width', M.rCheek, M.lCheek);
  distance('alar_width', M.rAla, M.lAla);
  distance('nose_wing_width', M.rNoseWing, M.lNoseWing);
  distance('mouth_width', M.rMouth, M.lMouth);

  // Depth-bearing distances: how far the nose stands out of the face.
  const faceEdges = [M.rFaceEdge, M.lFaceEdge];
  distance('eye_centres_to_nose_tip', BOTH_EYES, M.noseTip);
  distance('face_edges_to_nose_tip', faceEdges, M.noseTip);
  distance('face_edges_to_nasion', faceEdges, M.nasion);
  distance('nose_tip_to_chin', M.noseTip, M.chin);

  // Mirrored distances, right then left.
  for (const [name, [right, left]] of BILATERAL_DISTANCES) {
    distance(`${name}_right`, right[0], right[1]);
    distance(`${name}_left`, left[0], left[1]);
  }

  // Angles on the midline.
  angle('nasolabial', M.noseTip, M.subnasale, M.upperLip);
  angle('nasofrontal', M.glabella, M.nasion, M.noseTip);
  angle('nose_tip', M.nasion, M.noseTip, M.subnasale);
  angle('mentolabial', M.lowerLip, M.mentolabial, M.chin);
  angle('facial_convexity', M.foreheadTop, M.noseTip, M.chin);
  angle('nasion_nose_tip_chin', M.nasion, M.noseTip, M.chin);
  angle('chin', M.rGonion, M.chin, M.lGonion);
  angle('alae_at_nose_tip', M.rAla, M.noseTip, M.lAla);
  angle('eyes_at_nasion', M.rEyeOuter, M.nasion, M.lEyeOuter);
  angle('mouth_at_chin', M.rMouth, M.chin, M.lMouth);
  angle('mouth_at_nose_tip', M.rMouth, M.noseTip, M.lMouth);
  angle('mouth_at_upper_lip', M.rMouth, M.upperLip, M.lMouth);
  angle('mouth_at_lower_lip', M.rMouth, M.lowerLip, M.lMouth);
  angle('face_edges_at_nasion', M.rFaceEdge, M.nasion, M.lFaceEdge);
  angle('face_edges_at_chin', M.rFaceEdge, M.chin, M.lFaceEdge);

  // Mirrored angles, right then left.
  for (const [name, [right, left]] of BILATERAL_ANGLES) {
    angle(`${name}_right`, ...right);
    angle(`${name}_left`, ...left);
  }

  // Symmetry: left / right.
  for (const [name, [right, left]] of [...BILATERAL_DISTANCES, ...RATIO_ONLY]) {
    specs.push({ kind: 'ratio', name: `ratio_${name}`, left, right });
  }

  // Curvature along contours.
  for (const [name, contour] of CONTOURS) {
    for (const measure of ['chord_arc', 'turning'] as const) {
      specs.push({ kind: 'curvature', name: `curv_${name}_${measure}`, measure, contour });
    }
  }
  return specs;
}

const SPECS: readonly FeatureSpec[] = Object.freeze(buildSpecs());

/** Every landmark index a feature reads, ascending, without duplicates. */
function specLandmarks(spec: FeatureSpec): number[] {
  const anchors: Anchor[] =
    spec.kind === 'distance'
      ? [spec.a, spec.b]
      : spec.kind === 'angle'
        ? [spec.a, spec.vertex, spec.b]
        : spec.kind === 'ratio'
          ? [...spec.left, ...spec.right]
          : [...spec.contour];
  const indices = anchors.flatMap((anchor) => (typeof anchor === 'number' ? [anchor] : anchor));
  return [...new Set(indices)].sort((x, y) => x - y);
}

/** An anchor as text: the index, or the centroid of a named landmark group. */
function describeAnchor(anchor: Anchor): string {
  if (typeof anchor === 'number') return String(anchor);
  if (anchor === BOTH_EYES) return 'mid(eye centres)';
  return `mid(${anchor.join(' ')})`;
}

/** A feature's formula in landmark indices, for documentation. */
function describeSpec(spec: FeatureSpec): string {
  const segment = ([a, b]: Segment) => `|${describeAnchor(a)} - ${describeAnchor(b)}|`;
  switch (spec.kind) {
    case 'distance':
      return `${segment([spec.a, spec.b])} / IOD`;
    case 'angle':
      return `angle ${[spec.a, spec.vertex, spec.b].map(describeAnchor).join(' > ')}`;
    case 'ratio':
      return `${segment(spec.left)} / ${segment(spec.right)}`;
    case 'curvature':
      return `${spec.measure === 'chord_arc' ? 'chord/arc' : 'turning'} ${spec.contour.join(' ')}`;
  }
}

/**
 * The 126 features in descriptor order: name, kind, the landmark indices each reads (the
 * inter-ocular distance that normalises the distances is not listed; it reads the 32 eye
 * contour landmarks) and a formula in landmark indices: `|a - b| / IOD` a distance,
 * `angle a > v > b` the angle at v, `|..| / |..|` a ratio, `chord/arc ...` or `turning ...`
 * a curvature measure along the listed contour, `mid(...)` a centroid.
 */
export const GEOMETRY_FEATURES: readonly {
  name: string;
  kind: 'distance' | 'angle' | 'ratio' | 'curvature';
  landmarks: number[];
  definition: string;
}[] = Object.freeze(
  SPECS.map((spec) =>
    Object.freeze({
      name: spec.name,
      kind: spec.kind,
      landmarks: specLandmarks(spec),
      definition: describeSpec(spec),
    }),
  ),
);

type Vec3 = [number, number, number];

/** Reads landmarks as float64 3-D points, centroids included. */
class MeshPoints {
  private readonly landmarks: Float32Array;

  constructor(landmarks: Float32Array) {
    this.landmarks = landmarks;
  }

  at(anchor: Anchor): Vec3 {
    const indices = typeof anchor === 'number' ? [anchor] : anchor;
    const point: Vec3 = [0, 0, 0];
    for (const index of indices) {
      point[0] += this.landmarks[3 * index];
      point[1] += this.landmarks[3 * index + 1];
      point[2] += this.landmarks[3 * index + 2];
    }
    return [point[0] / indices.length, point[1] / indices.length, point[2] / indices.length];
  }
}

function sub(a: Vec3, b: Vec3): Vec3 {
  return [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
}

function norm(v: Vec3): number {
  return Math.hypot(v[0], v[1], v[2]);
}

/**
 * The unsigned angle between two vectors in radians, [0, pi]. atan2 of |u x v| and u . v is
 * accurate everywhere, where arccos of the normalised dot product loses digits near 0 and pi.
 * A zero vector gives 0.
 */
function angleBetween(u: Vec3, v: Vec3): number {
  const cross = norm([
    u[1] * v[2] - u[2] * v[1],
    u[2] * v[0] - u[0] * v[2],
    u[0] * v[1] - u[1] * v[0],
  ]);
  const dot = u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
  return Math.atan2(cross, dot);
}

/** One feature's value; distances are divided by `iod`. */
function measure(spec: FeatureSpec, points: MeshPoints, iod: number): number {
  switch (spec.kind) {
    case 'distance':
      return norm(sub(points.at(spec.a), points.at(spec.b))) / iod;

    case 'angle': {
      const vertex = points.at(spec.vertex);
      return angleBetween(sub(points.at(spec.a), vertex), sub(points.at(spec.b), vertex));
    }

    case 'ratio': {
      const left = norm(sub(points.at(spec.left[0]), points.at(spec.left[1]))) / iod;
      const right = norm(sub(points.at(spec.right[0]), points.at(spec.right[1]))) / iod;
      return (left + RATIO_EPSILON) / (right + RATIO_EPSILON);
    }

    case 'curvature': {
      const contour = spec.contour.map((index) => points.at(index));
      if (spec.measure === 'chord_arc') {
        let arc = 0;
        for (let i = 1; i < contour.length; i++) arc += norm(sub(contour[i], contour[i - 1]));
        const chord = norm(sub(contour[contour.length - 1], contour[0]));
        return arc > 0 ? chord / arc : 1;
      }
      let turning = 0;
      for (let i = 1; i + 1 < contour.length; i++) {
        turning += angleBetween(sub(contour[i], contour[i - 1]), sub(contour[i + 1], contour[i]));
      }
      return turning;
    }
  }
}

/**
 * The 126-number geometric descriptor of one face mesh: `landmarks` is the mesh flattened as
 * [x0, y0, z0, x1, ...] (468 landmarks; a 478-landmark mesh with iris points also works, the
 * extra points are ignored), in any consistent unit. Distances come out in inter-ocular
 * distances, angles in radians, ratios and chord/arc ratios unitless; see docs/GEOMETRY.md.
 * Throws invalid_argument when the array is too short, holds a non-finite number, or the
 * eye centres coincide (a degenerate mesh); the result never holds NaN.
 */
export function geometricDescriptor(landmarks: Float32Array): Float32Array {
  if (!(landmarks instanceof Float32Array) || landmarks.length < MESH_LANDMARKS * 3) {
    throw new ReidbError(
      'invalid_argument',
      `geometricDescriptor needs a Float32Array of ${MESH_LANDMARKS} x 3 landmark coordinates, ` +
        `got ${landmarks instanceof Float32Array ? landmarks.length : typeof landmarks} values`,
      { input: 'landmarks' },
    );
  }

  // Degenerate input: a non-finite coordinate, or eye centres too close to define a scale.
  const low = [Infinity, Infinity, Infinity];
  const high = [-Infinity, -Infinity, -Infinity];
  for (let i = 0; i < MESH_LANDMARKS * 3; i++) {
    const value = landmarks[i];
    if (!Number.isFinite(value)) {
      throw new ReidbError(
        'invalid_argument',
        `landmark ${Math.floor(i / 3)} has a non-finite coordinate (${value})`,
        { input: 'landmarks' },
      );
    }
    low[i % 3] = Math.min(low[i % 3], value);
    high[i % 3] = Math.max(high[i % 3], value);
  }
  const extent = Math.max(high[0] - low[0], high[1] - low[1], high[2] - low[2]);
  const points = new MeshPoints(landmarks);
  const iod = norm(sub(points.at(LEFT_EYE), points.at(RIGHT_EYE)));
  if (!(extent > 0) || !(iod > MIN_IOD_SHARE * extent)) {
    throw new ReidbError(
      'invalid_argument',
      `degenerate face mesh: the inter-ocular distance is ${iod} for a mesh extent of ${extent}`,
      { input: 'landmarks', details: { iod, extent } },
    );
  }

  // The features, each finite by construction; checked all the same so NaN cannot escape.
  const descriptor = new Float32Array(GEOMETRY_DIM);
  for (let i = 0; i < GEOMETRY_DIM; i++) {
    const value = measure(SPECS[i], points, iod);
    if (!Number.isFinite(value)) {
      throw new ReidbError(
        'invalid_argument',
        `degenerate face mesh: feature ${SPECS[i].name} is not finite (${value})`,
        { input: 'landmarks' },
      );
    }
    descriptor[i] = value;
  }
  return descriptor;
}
