/**
 * The gated fusion's model file (format version 1), written by training and read by serving:
 *
 *   bytes 0-7    magic 'REIDBFUS' (ASCII)
 *   bytes 8-11   H, the header's length in bytes, uint32 little-endian
 *   next H       the FusionModelHeader as UTF-8 JSON
 *   the rest     the weights, float32 little-endian, in this order:
 *                geometryMean [G], geometryStd [G],
 *                gate.weight [D x D], gate.bias [D],
 *                fc1.weight [D x 512], fc1.bias [512],
 *                fc2.weight [512 x 256], fc2.bias [256],
 *                fc3.weight [256 x 128], fc3.bias [128]
 *
 * with G = geometryDim, D = appearanceDim + geometryDim and every weight matrix row-major
 * [inputs, outputs]. The header's weightsSha256 is the sha256 of the weight bytes and its id
 * is 'gated-v1:' + their first 12 hex digits, so two files share an id only when they hold
 * the same weights. The weights start right after the header, unaligned.
 */
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';

import { ReidbError } from '../errors.ts';
import {
  gatedFusionParamsProblem,
  gatedFusionShapes,
  STANDARD_LAYER_SIZES,
  type GatedFusionModel,
} from './gated-fusion.ts';
import type { DenseLayer, FusionModelHeader, GatedFusionParams } from './gated-fusion-types.ts';

/** The file's first 8 bytes. */
export const FUSION_MODEL_MAGIC = 'REIDBFUS';

/** The only format version this code reads and writes. */
export const FUSION_MODEL_VERSION = 1;

/** Prefix of a gated fusion model's id. */
export const GATED_FUSION_ID_PREFIX = 'gated-v1:';

/** Hex digits of the weights' sha256 kept in the id. */
const ID_DIGEST_CHARS = 12;

const PREAMBLE_BYTES = FUSION_MODEL_MAGIC.length + 4;

/** A header longer than this is taken for damage, not read (bytes). */
const MAX_HEADER_BYTES = 1 << 20;

/**
 * What the writer needs of the header: everything but what it computes (id, weightsSha256).
 * format, version, appearanceDim, geometryDim, inputDim and outputDim follow from the weights
 * and may be left out; when given they must agree.
 */
export type FusionModelHeaderInput = Omit<
  FusionModelHeader,
  | 'id'
  | 'weightsSha256'
  | 'format'
  | 'version'
  | 'appearanceDim'
  | 'geometryDim'
  | 'inputDim'
  | 'outputDim'
> &
  Partial<
    Pick<
      FusionModelHeader,
      'format' | 'version' | 'appearanceDim' | 'geometryDim' | 'inputDim' | 'outputDim'
    >
  >;

/** What a reader requires of the model; a difference is model_mismatch. */
export interface FusionModelExpectation {
  /** The appearance embedder's id the gallery uses (e.g. 'dlib-resnet-v1'). */
  embedderId?: string;
  /** The appearance embedding's dimension (128 for dlib, 512 for ArcFace). */
  appearanceDim?: number;
}

/** The weight arrays in file order. */
function weightArrays(params: GatedFusionParams): Float32Array[] {
  const layers: DenseLayer[] = [params.gate, params.fc1, params.fc2, params.fc3];
  return [params.geometryMean, params.geometryStd, ...layers.flatMap((l) => [l.weight, l.bias])];
}

/** Number of float32 values a file with these dims holds. */
function weightCount(appearanceDim: number, geometryDim: number): number {
  return 2 * geometryDim + gatedFusionShapes(appearanceDim, geometryDim).parameterCounts.total;
}

function encodeWeights(params: GatedFusionParams): Buffer {
  const arrays = weightArrays(params);
  const total = arrays.reduce((sum, a) => sum + a.length, 0);
  const out = Buffer.allocUnsafe(total * 4);
  let offset = 0;
  for (const array of arrays) {
    for (let i = 0; i < array.length; i++, offset += 4) out.writeFloatLE(array[i], offset);
  }
  return out;
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function invalid(message: string, input?: string): ReidbError {
  return new ReidbError('invalid_argument', message, { input });
}

/**
 * Writes a model file (see the module comment) and returns the full header it holds, with
 * id and weightsSha256 filled in. Only the standard widths (512, 256, 128) can be stored.
 * The file is written beside its final name and renamed into place, so a reader never sees
 * half a file. Throws invalid_argument for parameters that do not chain, non-finite weights,
 * other widths or a header that disagrees with the weights; internal when the file cannot be
 * written.
 */
export function writeFusionModel(
  file: string,
  header: FusionModelHeaderInput,
  params: GatedFusionParams,
): FusionModelHeader {
  const problem = gatedFusionParamsProblem(params, true);
  if (problem !== undefined) throw invalid(`cannot write ${file}: ${problem}`, 'params');
  const { hidden1, hidden2, output } = STANDARD_LAYER_SIZES;
  const widths = [params.fc1.outputs, params.fc2.outputs, params.fc3.outputs];
  if (widths.join() !== [hidden1, hidden2, output].join()) {
    const message =
      `cannot write ${file}: format version ${FUSION_MODEL_VERSION} stores layers of ` +
      `${hidden1}, ${hidden2} and ${output} outputs, these have ${widths.join(', ')}`;
    throw invalid(message, 'params');
  }

  // Header facts that follow from the weights: taken from them, and checked when given.
  const derived = {
    format: 'reidb-gated-fusion',
    version: FUSION_MODEL_VERSION,
    appearanceDim: params.appearanceDim,
    geometryDim: params.geometryDim,
    inputDim: params.appearanceDim + params.geometryDim,
    outputDim: output,
  } as const;
  for (const [name, value] of Object.entries(derived)) {
    const given = (header as Record<string, unknown>)[name];
    if (given !== undefined && given !== value) {
      throw invalid(`cannot write ${file}: header ${name} is ${given}, the weights say ${value}`);
    }
  }
  checkHeaderFields({ ...header, ...derived }, (what) => invalid(`cannot write ${file}: ${what}`));

  const weights = encodeWeights(params);
  const weightsSha256 = sha256Hex(weights);
  const full: FusionModelHeader = {
    format: derived.format,
    version: derived.version,
    id: GATED_FUSION_ID_PREFIX + weightsSha256.slice(0, ID_DIGEST_CHARS),
    embedderId: header.embedderId,
    alignMode: header.alignMode,
    appearanceDim: derived.appearanceDim,
    geometryDim: derived.geometryDim,
    inputDim: derived.inputDim,
    outputDim: derived.outputDim,
    weightsSha256,
    createdAt: header.createdAt,
    training: header.training,
    metrics: header.metrics,
  };

  const json = Buffer.from(JSON.stringify(full, null, 2), 'utf8');
  const preamble = Buffer.alloc(PREAMBLE_BYTES);
  preamble.write(FUSION_MODEL_MAGIC, 0, 'ascii');
  preamble.writeUInt32LE(json.length, FUSION_MODEL_MAGIC.length);

  const temporary = `${file}.${process.pid}.${Date.now()}.partial`;
  try {
    writeFileSync(temporary, Buffer.concat([preamble, json, weights]));
    renameSync(temporary, file);
  } catch (cause) {
    rmSync(temporary, { force: true });
    const message = cause instanceof Error ? cause.message : String(cause);
    throw new ReidbError('internal', `cannot write fusion model ${file}: ${message}`, {
      input: file,
      cause,
    });
  }
  return full;
}

/**
 * Checks the header fields that are not derived from the weights; `fail` builds the error
 * for a message.
 */
function checkHeaderFields(header: Record<string, unknown>, fail: (what: string) => Error): void {
  if (typeof header.embedderId !== 'string' || header.embedderId.length === 0) {
    throw fail('header embedderId must be a non-empty string');
  }
  if (header.alignMode !== 'mesh' && header.alignMode !== 'raw') {
    throw fail(`header alignMode must be 'mesh' or 'raw', got ${JSON.stringify(header.alignMode)}`);
  }
  if (typeof header.createdAt !== 'string') throw fail('header createdAt must be a string');
  for (const name of ['training', 'metrics']) {
    const value = header[name];
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw fail(`header ${name} must be an object`);
    }
  }
}

/**
 * Reads and checks a model file. Every failure is a ReidbError naming the file: model_missing
 * when it does not exist; model_corrupt for a wrong magic, a truncated or over-long file, a
 * header that is not the expected JSON, weight sizes that do not match its dims, weights whose
 * sha256 or id do not match the header, or a non-finite weight; model_mismatch for a format
 * version other than 1 and for an embedderId or appearanceDim other than `expect` asks (the
 * message gives both values).
 */
export function readFusionModel(
  file: string,
  expect: FusionModelExpectation = {},
): GatedFusionModel {
  const corrupt = (what: string, cause?: unknown) =>
    new ReidbError('model_corrupt', `fusion model ${file} is damaged: ${what}`, {
      input: file,
      cause,
    });
  const bytes = readModelBytes(file);

  // Preamble and header.
  if (bytes.length < PREAMBLE_BYTES) throw corrupt(`only ${bytes.length} bytes`);
  if (bytes.toString('latin1', 0, FUSION_MODEL_MAGIC.length) !== FUSION_MODEL_MAGIC) {
    throw corrupt(`it does not start with '${FUSION_MODEL_MAGIC}'`);
  }
  const headerBytes = bytes.readUInt32LE(FUSION_MODEL_MAGIC.length);
  if (headerBytes > MAX_HEADER_BYTES || PREAMBLE_BYTES + headerBytes > bytes.length) {
    throw corrupt(`truncated: a ${headerBytes}-byte header in a ${bytes.length}-byte file`);
  }
  const header = parseHeader(bytes.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + headerBytes), file);

  // Weights: size from the dims, then integrity.
  const weights = bytes.subarray(PREAMBLE_BYTES + headerBytes);
  const expectedBytes = 4 * weightCount(header.appearanceDim, header.geometryDim);
  if (weights.length !== expectedBytes) {
    const what = weights.length < expectedBytes ? 'truncated' : 'too long';
    throw corrupt(
      `${what}: ${weights.length} weight bytes, dims ${header.appearanceDim} + ` +
        `${header.geometryDim} need ${expectedBytes}`,
    );
  }
  const sha = sha256Hex(weights);
  if (sha !== header.weightsSha256) {
    throw corrupt(`the weights' sha256 is ${sha}, the header says ${header.weightsSha256}`);
  }
  const id = GATED_FUSION_ID_PREFIX + sha.slice(0, ID_DIGEST_CHARS);
  if (header.id !== id) throw corrupt(`header id is ${header.id}, the weights give ${id}`);

  // What the caller needs this model to fit.
  if (expect.embedderId !== undefined && header.embedderId !== expect.embedderId) {
    throw new ReidbError(
      'model_mismatch',
      `fusion model ${file} was trained on embedder ${header.embedderId}, this gallery uses ` +
        expect.embedderId,
      { input: file, details: { model: header.embedderId, expected: expect.embedderId } },
    );
  }
  if (expect.appearanceDim !== undefined && header.appearanceDim !== expect.appearanceDim) {
    throw new ReidbError(
      'model_mismatch',
      `fusion model ${file} takes ${header.appearanceDim}-D appearance embeddings, the ` +
        `embedder gives ${expect.appearanceDim}-D`,
      { input: file, details: { model: header.appearanceDim, expected: expect.appearanceDim } },
    );
  }

  const params = decodeWeights(weights, header.appearanceDim, header.geometryDim);
  const problem = gatedFusionParamsProblem(params, true);
  if (problem !== undefined) throw corrupt(problem);
  return { header, params };
}

function readModelBytes(file: string): Buffer {
  let isFile = false;
  try {
    isFile = statSync(file).isFile();
  } catch (cause) {
    throw new ReidbError('model_missing', `fusion model ${file} does not exist`, {
      input: file,
      cause,
    });
  }
  if (!isFile) {
    throw new ReidbError('model_missing', `fusion model ${file} is not a file`, { input: file });
  }
  return readFileSync(file);
}

/** Parses and checks the JSON header (everything but the weights' integrity). */
function parseHeader(json: Buffer, file: string): FusionModelHeader {
  const corrupt = (what: string, cause?: unknown) =>
    new ReidbError('model_corrupt', `fusion model ${file} is damaged: ${what}`, {
      input: file,
      cause,
    });

  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (cause) {
    throw corrupt('its header is not UTF-8 JSON', cause);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw corrupt('its header is not a JSON object');
  }
  if (header.format !== 'reidb-gated-fusion') {
    throw corrupt(`header format is ${JSON.stringify(header.format)}, not 'reidb-gated-fusion'`);
  }
  if (header.version !== FUSION_MODEL_VERSION) {
    throw new ReidbError(
      'model_mismatch',
      `fusion model ${file} has format version ${JSON.stringify(header.version)}; this reidb ` +
        `reads version ${FUSION_MODEL_VERSION}`,
      { input: file, details: { version: header.version } },
    );
  }

  // Dims: positive integers that add up.
  for (const name of ['appearanceDim', 'geometryDim', 'inputDim', 'outputDim']) {
    const value = header[name];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 1 << 16) {
      throw corrupt(`header ${name} is ${JSON.stringify(value)}`);
    }
  }
  const { appearanceDim, geometryDim, inputDim, outputDim } = header as Record<string, number>;
  if (inputDim !== appearanceDim + geometryDim) {
    throw corrupt(`header inputDim ${inputDim} is not ${appearanceDim} + ${geometryDim}`);
  }
  if (outputDim !== STANDARD_LAYER_SIZES.output) {
    const stored = STANDARD_LAYER_SIZES.output;
    throw corrupt(`header outputDim is ${outputDim}, version 1 stores ${stored}`);
  }

  if (typeof header.weightsSha256 !== 'string' || !/^[0-9a-f]{64}$/.test(header.weightsSha256)) {
    throw corrupt('header weightsSha256 is not 64 hex digits');
  }
  if (typeof header.id !== 'string') throw corrupt('header id is not a string');
  checkHeaderFields(header, corrupt);
  return header as unknown as FusionModelHeader;
}

/** Splits the weight bytes into parameters (standard widths), reading float32 little-endian. */
function decodeWeights(
  weights: Buffer,
  appearanceDim: number,
  geometryDim: number,
): GatedFusionParams {
  let offset = 0;
  const take = (count: number): Float32Array => {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++, offset += 4) out[i] = weights.readFloatLE(offset);
    return out;
  };
  const layer = (inputs: number, outputs: number): DenseLayer => ({
    inputs,
    outputs,
    weight: take(inputs * outputs),
    bias: take(outputs),
  });

  const inputDim = appearanceDim + geometryDim;
  const { hidden1, hidden2, output } = STANDARD_LAYER_SIZES;
  const geometryMean = take(geometryDim);
  const geometryStd = take(geometryDim);
  return {
    appearanceDim,
    geometryDim,
    geometryMean,
    geometryStd,
    gate: layer(inputDim, inputDim),
    fc1: layer(inputDim, hidden1),
    fc2: layer(hidden1, hidden2),
    fc3: layer(hidden2, output),
  };
}
