/**
 * Appearance features: the seam between the pipeline and the face-embedding networks.
 * Every network sits behind one `Embedder` contract, created by `createEmbedder` from
 * explicit options and closed by the caller. There is no fall-back from one kind to another:
 * a kind that cannot start is an error that names the file and what was wrong.
 */
import { ReidbError } from '../errors.ts';
import type { RgbImage } from '../types.ts';

/** A face-embedding network, ready to run. */
export interface Embedder {
  /** Stable id recorded in the gallery, e.g. 'dlib-resnet-v1' or 'onnx:<sha256 prefix>'. */
  readonly id: string;
  /** Output dimension (128 for dlib, 512 for ArcFace). */
  readonly dim: number;
  /**
   * Side of the square input crop in pixels that the caller must align faces to
   * (150 dlib, 112 ArcFace).
   */
  readonly inputSize: number;
  /** L2-normalised embeddings, one per crop, crops already aligned to inputSize x inputSize. */
  embed(crops: RgbImage[]): Promise<Float32Array[]>;
  close(): Promise<void> | void;
}

/**
 * 'dlib': the dlib face-recognition ResNet (150 x 150 input, 128-D), run on tfjs with the
 * weights that @vladmandic/face-api ships. 'onnx-arcface': an ArcFace network in the
 * insightface layout (112 x 112 input, usually 512-D), run on onnxruntime-node.
 */
export type EmbedderKind = 'dlib' | 'onnx-arcface';

export interface EmbedderOptions {
  /** Which network to run. Default 'dlib'. */
  kind?: EmbedderKind;
  /** tfjs backend for 'dlib'. Default 'wasm'. Ignored by 'onnx-arcface'. */
  backend?: 'wasm' | 'cpu';
  /** The .onnx file for 'onnx-arcface' (required there). Ignored by 'dlib'. */
  modelPath?: string;
  /**
   * Folder holding the dlib weight files, checked against src/models/manifest.json.
   * Default: the installed @vladmandic/face-api package. Ignored by 'onnx-arcface'.
   */
  modelDir?: string;
  /** onnxruntime execution providers for 'onnx-arcface'. Default ['cpu']. Ignored by 'dlib'. */
  executionProviders?: string[];
}

/**
 * Creates the embedder that `options.kind` names (default 'dlib'). Each kind's module is
 * loaded on demand, so a deployment that runs ArcFace never loads tfjs and the other way
 * round. Throws model_missing, model_corrupt or model_mismatch naming the file.
 */
export async function createEmbedder(options: EmbedderOptions): Promise<Embedder> {
  const kind = options.kind ?? 'dlib';

  if (kind === 'dlib') {
    const { createDlibEmbedder } = await import('./dlib-embedder.ts');
    return createDlibEmbedder({ backend: options.backend, modelDir: options.modelDir });
  }

  if (kind === 'onnx-arcface') {
    if (options.modelPath === undefined || options.modelPath === '') {
      throw new ReidbError(
        'model_missing',
        "embedder 'onnx-arcface' needs modelPath, the .onnx file of an ArcFace network",
        { input: 'modelPath' },
      );
    }
    const { createOnnxEmbedder } = await import('./onnx-embedder.ts');
    return createOnnxEmbedder({
      modelPath: options.modelPath,
      executionProviders: options.executionProviders,
    });
  }

  throw new ReidbError('invalid_argument', `unknown embedder kind '${String(kind)}'`, {
    input: String(kind),
    details: { known: ['dlib', 'onnx-arcface'] },
  });
}

/**
 * Checks that every crop is an 8-bit RGB image of `size` x `size` pixels with a buffer of the
 * matching length; throws invalid_argument naming the first crop that is not.
 */
export function checkCrops(crops: RgbImage[], size: number, embedderId: string): void {
  for (const [i, crop] of crops.entries()) {
    const expected = size * size * 3;
    const ok =
      crop.width === size &&
      crop.height === size &&
      crop.channels === 3 &&
      crop.data instanceof Uint8Array &&
      crop.data.length === expected;
    if (!ok) {
      throw new ReidbError(
        'invalid_argument',
        `embedder ${embedderId}: crop ${i} is ${crop.width}x${crop.height}x${crop.channels} ` +
          `with ${crop.data?.length} bytes; it must be ${size}x${size}x3 (${expected} bytes)`,
        { input: `crops[${i}]`, details: { width: crop.width, height: crop.height, size } },
      );
    }
  }
}

/** Scales each row of a [n, dim] matrix to unit L2 length and splits it into n vectors. */
export function normaliseRows(flat: Float32Array, n: number, dim: number): Float32Array[] {
  const out: Float32Array[] = [];
  for (let r = 0; r < n; r++) {
    const row = flat.slice(r * dim, (r + 1) * dim);
    let sum = 0;
    for (const v of row) sum += v * v;
    const norm = Math.sqrt(sum);

    // A zero vector has no direction; leave it zero rather than fill it with NaN.
    if (norm > 0) for (let k = 0; k < dim; k++) row[k] /= norm;
    out.push(row);
  }
  return out;
}
