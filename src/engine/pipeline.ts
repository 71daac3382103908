import { ReidbError } from '../errors.ts';
import { alignFace } from '../face/align.ts';
import { createFaceDetector, type FaceDetector } from '../face/detector.ts';
import { createFaceMesher, DEFAULT_MIN_MESH_SCORE, type FaceMesher } from '../face/mesh.ts';
import { estimateHeadPose } from '../face/pose.ts';
import { createEmbedder, type Embedder, type EmbedderOptions } from '../features/appearance.ts';
import { createAppearanceOnlyFusion, createConcatFusion, type Fusion } from '../features/fusion.ts';
import { readFusionModel } from '../features/fusion-model-file.ts';
import { createGatedFusion } from '../features/gated-fusion.ts';
import { geometricDescriptor } from '../features/geometry.ts';
import type { TfBackend } from '../tf/runtime.ts';
import type { AlignMode, Box, Detection, FaceFeatures, RgbImage } from '../types.ts';
import { faceQuality } from './quality.ts';

export type FusionKind = 'concat' | 'appearance';

/** Options of the face pipeline; every field has a documented default. */
export interface PipelineOptions {
  /** tfjs backend for detection, mesh and the dlib embedder. Default 'wasm'. */
  backend?: TfBackend;
  /** Appearance embedder. Default `{kind: 'dlib'}`. */
  embedder?: EmbedderOptions;
  /** 'mesh' (least-squares affine to the frontal template) or 'raw' (box crop). Default 'mesh'. */
  alignMode?: AlignMode;
  /** Detector score below which a candidate is not a face, in [0, 1]. Default: the detector's. */
  minDetectorScore?: number;
  /** Mesh face-present score below which a face is rejected, in [0, 1]. */
  minMeshScore?: number;
  /** Faces smaller than this width in pixels are rejected as unusable. Default 24. */
  minFaceWidth?: number;
  /** Most faces analysed per image. Default 10. */
  maxFaces?: number;
  /** Non-learned fusion used until a learned one is configured. Default 'concat'. */
  fusion?: FusionKind;
  /** Weight of the geometry part in the concat fusion, in [0, 1]. Default: the fusion's. */
  geometryWeight?: number;
  /**
   * A trained gated fusion model file (src/features/fusion-model-file.ts). When given it
   * replaces `fusion`; it must have been trained for this embedder and alignment.
   */
  fusionModel?: string;
}

/** Why a candidate face was not used. */
export interface RejectedFace {
  box: Box;
  code: 'low_mesh_score' | 'too_small';
  message: string;
  detectorScore: number;
  meshScore?: number;
}

/** Everything the pipeline found in one image. */
export interface Analysis {
  /** Usable faces, sorted by quality (best first). */
  faces: FaceFeatures[];
  /** Candidates the detector proposed that were not usable, with the reason. */
  rejected: RejectedFace[];
  /** Image width and height in pixels, after EXIF orientation. */
  width: number;
  height: number;
  /** Milliseconds spent per stage for this image. */
  stageMs: Record<string, number>;
}

/** Identifies what produced a vector; the gallery stores it and refuses a mix. */
export interface PipelineIdentity {
  embedderId: string;
  appearanceDim: number;
  fusionId: string;
  fusedDim: number;
  alignMode: AlignMode;
}

export interface Pipeline {
  readonly identity: PipelineIdentity;
  readonly detectorId: string;
  readonly meshId: string;
  /** Detects, meshes, aligns and embeds every usable face of an image. */
  analyse(image: RgbImage): Promise<Analysis>;
  close(): Promise<void>;
}

export const DEFAULT_MIN_FACE_WIDTH = 24;

/**
 * Creates the face pipeline: detector, mesh, embedder and fusion, each from explicit options.
 * Fails at creation (model_missing / model_corrupt / model_mismatch naming the file) rather
 * than at the first image.
 */
export async function createPipeline(options: PipelineOptions = {}): Promise<Pipeline> {
  const backend = options.backend ?? 'wasm';
  const alignMode = options.alignMode ?? 'mesh';
  const minMeshScore = options.minMeshScore ?? DEFAULT_MIN_MESH_SCORE;
  const minFaceWidth = options.minFaceWidth ?? DEFAULT_MIN_FACE_WIDTH;
  const maxFaces = options.maxFaces ?? 10;

  const detector: FaceDetector = await createFaceDetector({
    backend,
    minScore: options.minDetectorScore,
    maxFaces,
  });
  const mesher: FaceMesher = await createFaceMesher({ backend });
  const embedder: Embedder = await createEmbedder({
    backend,
    ...(options.embedder ?? { kind: 'dlib' }),
  });
  const fusion = chooseFusion(options, embedder, alignMode);

  const identity: PipelineIdentity = {
    embedderId: embedder.id,
    appearanceDim: embedder.dim,
    fusionId: fusion.id,
    fusedDim: fusion.dim,
    alignMode,
  };

  async function analyse(image: RgbImage): Promise<Analysis> {
    const stageMs: Record<string, number> = { detect: 0, mesh: 0, align: 0, embed: 0, fuse: 0 };
    let t = performance.now();
    const lap = (stage: string): void => {
      const now = performance.now();
      stageMs[stage] += now - t;
      t = now;
    };

    const detections = await detector.detect(image);
    lap('detect');

    const rejected: RejectedFace[] = [];
    const kept: { detection: Detection; mesh: FaceFeatures['mesh'] }[] = [];
    for (const detection of detections) {
      if (detection.box.width < minFaceWidth) {
        rejected.push({
          box: detection.box,
          code: 'too_small',
          message: `face is ${Math.round(detection.box.width)} px wide, below ${minFaceWidth} px`,
          detectorScore: detection.score,
        });
        continue;
      }
      const mesh = await mesher.estimate(image, detection);
      if (mesh.score < minMeshScore) {
        rejected.push({
          box: detection.box,
          code: 'low_mesh_score',
          message: `face mesh score ${mesh.score.toFixed(3)} is below ${minMeshScore}`,
          detectorScore: detection.score,
          meshScore: mesh.score,
        });
        continue;
      }
      kept.push({ detection, mesh });
    }
    lap('mesh');

    const crops = kept.map(({ detection, mesh }) =>
      alignFace(
        image,
        detection,
        alignMode === 'mesh' ? mesh : null,
        alignMode,
        embedder.inputSize,
      ),
    );
    lap('align');

    const appearance = crops.length > 0 ? await embedder.embed(crops) : [];
    lap('embed');

    const faces: FaceFeatures[] = kept.map(({ detection, mesh }, i) => {
      const pose = estimateHeadPose(mesh);
      const geometry = geometricDescriptor(mesh.landmarks);
      return {
        detection,
        mesh,
        pose,
        quality: faceQuality(detection.box, pose, detection.score, mesh.score),
        appearance: appearance[i],
        geometry,
        fused: fusion.fuse(appearance[i], geometry),
      };
    });
    faces.sort((a, b) => b.quality - a.quality);
    lap('fuse');

    return { faces, rejected, width: image.width, height: image.height, stageMs };
  }

  return {
    identity,
    detectorId: detector.modelId,
    meshId: mesher.modelId,
    analyse,
    async close() {
      detector.close();
      mesher.close();
      await embedder.close();
    },
  };
}

function chooseFusion(options: PipelineOptions, embedder: Embedder, alignMode: AlignMode): Fusion {
  if (options.fusionModel !== undefined) {
    const model = readFusionModel(options.fusionModel, {
      embedderId: embedder.id,
      appearanceDim: embedder.dim,
    });
    if (model.header.alignMode !== alignMode) {
      throw new ReidbError(
        'model_mismatch',
        `fusion model ${options.fusionModel} was trained on '${model.header.alignMode}' ` +
          `alignment, but the pipeline aligns with '${alignMode}'`,
        { input: options.fusionModel },
      );
    }
    return createGatedFusion(model);
  }
  if (options.fusion === 'appearance') return createAppearanceOnlyFusion(embedder.dim);
  return createConcatFusion({
    appearanceDim: embedder.dim,
    geometryWeight: options.geometryWeight,
  });
}

/**
 * Picks the face to enrol from an image: the only face, or the most prominent one when its
 * prominence (quality x box area in pixels^2) is at least `dominance` times the next face's
 * (default 2): a bystander in the background or a face cut by the frame is smaller and of
 * lower quality, while two people photographed alike are not. Otherwise ambiguous_face,
 * naming the input and the number of faces; no usable face is no_face with the reason.
 */
export function pickEnrolmentFace(
  analysis: Analysis,
  input: string,
  dominance = 2,
): { face: FaceFeatures; index: number; note?: string } {
  if (analysis.faces.length === 0) throw noFaceError(analysis, input);
  if (analysis.faces.length === 1) return { face: analysis.faces[0], index: 0 };

  const prominence = (f: FaceFeatures): number =>
    f.quality * f.detection.box.width * f.detection.box.height;
  const order = analysis.faces
    .map((f, i) => ({ f, i }))
    .sort((a, b) => prominence(b.f) - prominence(a.f));
  if (prominence(order[0].f) >= dominance * prominence(order[1].f)) {
    return {
      face: order[0].f,
      index: order[0].i,
      note: `${analysis.faces.length} faces found; enrolled the most prominent (largest and clearest)`,
    };
  }
  throw new ReidbError(
    'ambiguous_face',
    `${input}: ${analysis.faces.length} faces of similar size and quality found; enrolment ` +
      'needs one clear face (crop the image or enrol a photo with one person)',
    { input, details: { faces: analysis.faces.map((f) => f.detection.box) } },
  );
}

/** The no_face error for an analysis, with the reason (nothing detected, or why rejected). */
export function noFaceError(analysis: Analysis, input: string): ReidbError {
  return new ReidbError('no_face', `${input}: ${noFaceReason(analysis)}`, {
    input,
    details: { rejected: analysis.rejected },
  });
}

/** A human-readable reason why an image has no usable face. */
export function noFaceReason(analysis: Analysis): string {
  if (analysis.rejected.length === 0) {
    return `no face detected in the ${analysis.width}x${analysis.height} image`;
  }
  const reasons = analysis.rejected.map((r) => r.message).join('; ');
  return `no usable face: ${analysis.rejected.length} candidate(s) rejected (${reasons})`;
}
