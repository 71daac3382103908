/**
 * ArcFace-type embedding networks in the insightface ONNX layout, run on onnxruntime-node.
 * The network takes float32 NCHW [n, 3, 112, 112] RGB crops scaled as (pixel - 127.5) / 127.5
 * and returns [n, dim] embeddings (512 for the insightface releases), which are L2-normalised
 * here. The model's input and output layout is checked when the embedder is created.
 */
import { createHash } from 'node:crypto';

import { InferenceSession, Tensor } from 'onnxruntime-node';

import { ReidbError } from '../errors.ts';
import { openOnnxSession, readOnnxFile } from './onnx-session.ts';
import type { RgbImage } from '../types.ts';
import { checkCrops, normaliseRows, type Embedder } from './appearance.ts';

/** Side of the input crop in pixels. */
export const ARCFACE_INPUT_SIZE = 112;

/** Pixel value mapped to 0, and the half-range mapped to 1, in 8-bit units. */
const PIXEL_CENTRE = 127.5;
const PIXEL_SCALE = 127.5;

/** Hex digits of the model file's sha256 kept in the embedder id. */
const ID_DIGEST_CHARS = 16;

export interface OnnxEmbedderOptions {
  /** The .onnx file. */
  modelPath: string;
  /** onnxruntime execution providers, in order of preference. Default ['cpu']. */
  executionProviders?: string[];
  /**
   * Most crops in one inference run; longer lists run in several. A model with a fixed batch
   * dimension of 1 always runs one crop at a time. Default 32.
   */
  maxBatch?: number;
}

/**
 * Loads an ArcFace ONNX model and returns an Embedder with id 'onnx:<first 16 hex digits of
 * the file's sha256>', inputSize 112 and the model's output dimension. Creation runs one blank
 * crop through the network to confirm the output layout. Throws model_missing when the file
 * does not exist, model_corrupt when onnxruntime cannot load it, model_mismatch when its input
 * is not one float32 [n, 3, 112, 112] tensor or its output is not [n, dim], and
 * invalid_argument for an execution provider onnxruntime does not have.
 */
export async function createOnnxEmbedder(options: OnnxEmbedderOptions): Promise<Embedder> {
  const file = options.modelPath;
  const executionProviders = options.executionProviders ?? ['cpu'];
  const maxBatch = options.maxBatch ?? 32;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) {
    throw new ReidbError(
      'invalid_argument',
      `maxBatch must be a positive integer, got ${maxBatch}`,
      { input: 'maxBatch' },
    );
  }

  const bytes = readOnnxFile(file, 'ONNX model');
  const id = `onnx:${createHash('sha256').update(bytes).digest('hex').slice(0, ID_DIGEST_CHARS)}`;
  const session = await openOnnxSession(bytes, file, executionProviders, 'ONNX model');

  let layout: ModelLayout;
  try {
    layout = checkLayout(session, file);
    layout.dim = await probeDim(session, layout, file);
  } catch (error) {
    await session.release();
    throw error;
  }

  const batchLimit = layout.fixedBatchOfOne ? 1 : maxBatch;
  let closed = false;

  return {
    id,
    dim: layout.dim,
    inputSize: ARCFACE_INPUT_SIZE,

    async embed(crops: RgbImage[]): Promise<Float32Array[]> {
      if (closed) {
        throw new ReidbError('invalid_argument', `embedder ${id} is closed`, { input: id });
      }
      checkCrops(crops, ARCFACE_INPUT_SIZE, id);

      const out: Float32Array[] = [];
      for (let start = 0; start < crops.length; start += batchLimit) {
        const batch = crops.slice(start, start + batchLimit);
        const flat = await run(session, layout, toInputTensor(batch), file);
        out.push(...normaliseRows(flat, batch.length, layout.dim));
      }
      return out;
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await session.release();
    },
  };
}

/** What creation learnt about the model's inputs and outputs. */
interface ModelLayout {
  inputName: string;
  outputName: string;
  /** The input's batch dimension is the number 1, not symbolic. */
  fixedBatchOfOne: boolean;
  /** Output dimension; 0 until the probe run has confirmed it. */
  dim: number;
}

/**
 * Reads the session's input/output metadata: one float32 input [n, 3, 112, 112] (n symbolic
 * or 1; a symbolic height or width is left to the probe run) and a float32 first output.
 */
function checkLayout(session: InferenceSession, file: string): ModelLayout {
  const mismatch = (what: string, details?: Record<string, unknown>) =>
    new ReidbError('model_mismatch', `ONNX model ${file} is not an ArcFace embedder: ${what}`, {
      input: file,
      details,
    });

  if (session.inputNames.length !== 1) {
    throw mismatch(`it has ${session.inputNames.length} inputs [${session.inputNames}], needs 1`);
  }
  if (session.outputNames.length < 1) throw mismatch('it has no outputs');

  const input = session.inputMetadata[0];
  let fixedBatchOfOne = false;
  if (input !== undefined && input.isTensor && input.shape.length > 0) {
    if (input.type !== 'float32') {
      throw mismatch(`input '${input.name}' is ${input.type}, needs float32`);
    }

    const shape = input.shape;
    const needed = [3, ARCFACE_INPUT_SIZE, ARCFACE_INPUT_SIZE];
    const wrong =
      shape.length !== 4 ||
      shape.slice(1).some((d, i) => typeof d === 'number' && d > 0 && d !== needed[i]);
    if (wrong) {
      throw mismatch(`input '${input.name}' has shape [${shape}], needs [n,3,112,112] (NCHW)`, {
        shape,
      });
    }

    const batch = shape[0];
    if (typeof batch === 'number' && batch > 1) {
      throw mismatch(`input '${input.name}' has a fixed batch of ${batch}, needs 1 or symbolic`);
    }
    fixedBatchOfOne = batch === 1;
  } else if (input !== undefined && !input.isTensor) {
    throw mismatch(`input '${input.name}' is not a tensor`);
  }

  const output = session.outputMetadata[0];
  if (output !== undefined && output.isTensor && output.type !== 'float32') {
    throw mismatch(`output '${output.name}' is ${output.type}, needs float32`);
  }

  return {
    inputName: session.inputNames[0],
    outputName: session.outputNames[0],
    fixedBatchOfOne,
    dim: 0,
  };
}

/** Runs one blank crop; the output must be [1, dim] with dim > 0. Returns dim. */
async function probeDim(
  session: InferenceSession,
  layout: ModelLayout,
  file: string,
): Promise<number> {
  const size = ARCFACE_INPUT_SIZE;
  const blank: RgbImage = {
    data: new Uint8Array(size * size * 3),
    width: size,
    height: size,
    channels: 3,
  };

  const feeds = { [layout.inputName]: toInputTensor([blank]) };
  let result: InferenceSession.OnnxValueMapType;
  try {
    result = await session.run(feeds);
  } catch (cause) {
    const message = cause instanceof Error ? cause.message : String(cause);
    throw new ReidbError(
      'model_mismatch',
      `ONNX model ${file} fails on a [1,3,112,112] input: ${message}`,
      { input: file, cause },
    );
  }

  const output = result[layout.outputName] as Tensor;
  const dims = output.dims;
  if (output.type !== 'float32' || dims.length !== 2 || dims[0] !== 1 || dims[1] < 1) {
    throw new ReidbError(
      'model_mismatch',
      `ONNX model ${file}: output '${layout.outputName}' is ${output.type} [${dims}] for one ` +
        'crop, needs float32 [1, dim]',
      { input: file, details: { dims, type: output.type } },
    );
  }
  return dims[1];
}

async function run(
  session: InferenceSession,
  layout: ModelLayout,
  input: Tensor,
  file: string,
): Promise<Float32Array> {
  const n = input.dims[0];
  const result = await session.run({ [layout.inputName]: input });
  const output = result[layout.outputName] as Tensor;

  if (output.dims.length !== 2 || output.dims[0] !== n || output.dims[1] !== layout.dim) {
    throw new ReidbError(
      'model_mismatch',
      `ONNX model ${file}: output [${output.dims}] for ${n} crops, expected [${n}, ${layout.dim}]`,
      { input: file },
    );
  }
  return output.data as Float32Array;
}

/** Packs RGB crops into a float32 NCHW tensor scaled as (pixel - 127.5) / 127.5. */
function toInputTensor(crops: RgbImage[]): Tensor {
  const plane = ARCFACE_INPUT_SIZE * ARCFACE_INPUT_SIZE;
  const buffer = new Float32Array(crops.length * 3 * plane);

  for (const [n, crop] of crops.entries()) {
    const base = n * 3 * plane;
    const d = crop.data;
    for (let p = 0; p < plane; p++) {
      buffer[base + p] = (d[3 * p] - PIXEL_CENTRE) / PIXEL_SCALE;
      buffer[base + plane + p] = (d[3 * p + 1] - PIXEL_CENTRE) / PIXEL_SCALE;
      buffer[base + 2 * plane + p] = (d[3 * p + 2] - PIXEL_CENTRE) / PIXEL_SCALE;
    }
  }

  const size = ARCFACE_INPUT_SIZE;
  return new Tensor('float32', buffer, [crops.length, 3, size, size]);
}
