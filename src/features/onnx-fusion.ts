/**
 * The gated fusion as an ONNX graph, for serving many faces at once on onnxruntime (CPU by
 * default, another execution provider when asked). The graph takes x, float32 [N, D], already
 * built by buildFusionInput, and returns h, float32 [N, out], of unit length per row:
 *
 *   x -> MatMul Wg -> Add bg -> Sigmoid -> Mul x -> MatMul W1 -> Add b1 -> Relu
 *     -> MatMul W2 -> Add b2 -> Relu -> MatMul W3 -> Add b3 -> ReduceL2 (axis 1, keepdims)
 *     -> Div -> h
 *
 * Opset 13, IR version 7. Building x stays in TypeScript because it is cheap and because
 * training must build it the same way.
 */
import { writeFileSync } from 'node:fs';

import { InferenceSession, Tensor } from 'onnxruntime-node';

import { ReidbError } from '../errors.ts';
import { openOnnxSession, readOnnxFile } from './onnx-session.ts';
import type { Fusion } from './fusion.ts';
import {
  checkGatedFusionModel,
  createGatedFusion,
  forwardGatedFusion,
  gatedFusionParamsProblem,
  type GatedFusionModel,
} from './gated-fusion.ts';
import type { GatedFusionParams } from './gated-fusion-types.ts';
import {
  encodeModel,
  floatTensor,
  floatValueInfo,
  graphNode,
  intAttribute,
  intsAttribute,
} from './onnx-proto.ts';

/** Names of the graph's input and output. */
export const ONNX_FUSION_INPUT = 'x';
export const ONNX_FUSION_OUTPUT = 'h';

const OPSET = 13;
const IR_VERSION = 7;

/**
 * Largest difference allowed between onnxruntime's and the TypeScript forward pass on the
 * probe inputs run at creation (unit-length outputs; measured differences are about 1e-7).
 * Larger means the ONNX file holds other weights than the model.
 */
const PROBE_TOLERANCE = 1e-4;

/** Options of exportFusionToOnnx. */
export interface ExportFusionOptions {
  /** Stored in the ONNX file's metadata as reidb.fusion_id (e.g. the model header's id). */
  fusionId?: string;
}

/**
 * Writes the network of `params` as an ONNX model (see the module comment) to `file`: input
 * 'x' float [N, D], output 'h' float [N, fc3.outputs], N symbolic. The ONNX file holds the
 * layers only; the geometry statistics stay in the reidb model file, which buildFusionInput
 * reads. Throws invalid_argument for parameters that do not chain or hold non-finite values,
 * internal when the file cannot be written.
 */
export function exportFusionToOnnx(
  params: GatedFusionParams,
  file: string,
  options: ExportFusionOptions = {},
): void {
  const problem = gatedFusionParamsProblem(params, true);
  if (problem !== undefined) {
    throw new ReidbError('invalid_argument', `cannot export to ${file}: ${problem}`, {
      input: 'params',
    });
  }
  const inputDim = params.appearanceDim + params.geometryDim;
  const outputDim = params.fc3.outputs;

  const layers = [
    ['gate', params.gate],
    ['fc1', params.fc1],
    ['fc2', params.fc2],
    ['fc3', params.fc3],
  ] as const;
  const initializers = layers.flatMap(([name, layer]) => [
    floatTensor(`${name}.weight`, [layer.inputs, layer.outputs], layer.weight),
    floatTensor(`${name}.bias`, [layer.outputs], layer.bias),
  ]);

  // One dense step: MatMul then Add, named after the layer.
  const dense = (name: string, input: string) => [
    graphNode('MatMul', [input, `${name}.weight`], [`${name}.matmul`], `${name}_matmul`),
    graphNode('Add', [`${name}.matmul`, `${name}.bias`], [`${name}.z`], `${name}_add`),
  ];
  const nodes = [
    ...dense('gate', ONNX_FUSION_INPUT),
    graphNode('Sigmoid', ['gate.z'], ['gate.s'], 'gate_sigmoid'),
    graphNode('Mul', ['gate.s', ONNX_FUSION_INPUT], ['gated'], 'gate_mul'),
    ...dense('fc1', 'gated'),
    graphNode('Relu', ['fc1.z'], ['fc1.a'], 'fc1_relu'),
    ...dense('fc2', 'fc1.a'),
    graphNode('Relu', ['fc2.z'], ['fc2.a'], 'fc2_relu'),
    ...dense('fc3', 'fc2.a'),
    graphNode('ReduceL2', ['fc3.z'], ['norm'], 'l2_norm', [
      intsAttribute('axes', [1]),
      intAttribute('keepdims', 1),
    ]),
    graphNode('Div', ['fc3.z', 'norm'], [ONNX_FUSION_OUTPUT], 'l2_div'),
  ];

  const metadata: Record<string, string> = {
    'reidb.format': 'reidb-gated-fusion-onnx',
    'reidb.input_dim': String(inputDim),
    'reidb.output_dim': String(outputDim),
  };
  if (options.fusionId !== undefined) metadata['reidb.fusion_id'] = options.fusionId;

  const bytes = encodeModel({
    graphName: 'reidb_gated_fusion',
    nodes,
    initializers,
    inputs: [floatValueInfo(ONNX_FUSION_INPUT, ['N', inputDim])],
    outputs: [floatValueInfo(ONNX_FUSION_OUTPUT, ['N', outputDim])],
    opset: OPSET,
    irVersion: IR_VERSION,
    producerName: 'reidb',
    docString: 'h = L2normalise(MLP(sigmoid(x Wg + bg) * x)); see docs/FUSION.md',
    metadata,
  });
  try {
    writeFileSync(file, bytes);
  } catch (cause) {
    const message = cause instanceof Error ? cause.message : String(cause);
    throw new ReidbError('internal', `cannot write ONNX fusion ${file}: ${message}`, {
      input: file,
      cause,
    });
  }
}

/** Options of createOnnxFusion. */
export interface OnnxFusionOptions {
  /** onnxruntime execution providers, in order of preference. Default ['cpu']. */
  executionProviders?: string[];
  /** Most inputs per inference run; longer lists run in several. Default 256. */
  maxBatch?: number;
}

/**
 * A Fusion whose batches run on onnxruntime. fuseBatch is the ONNX path. fuse, which the
 * Fusion interface makes synchronous, runs the same weights in TypeScript (forwardGatedFusion)
 * because onnxruntime-node only runs asynchronously; the two agree to about 1e-7 per value,
 * checked at creation, so both carry the model's id.
 */
export interface OnnxFusion extends Fusion {
  /**
   * Fused embeddings (dim values each, unit length) of inputs x built by buildFusionInput,
   * in order. Throws invalid_argument on a wrong length or a non-finite value, or on an input
   * the network maps to the zero vector.
   */
  fuseBatch(xs: readonly Float32Array[]): Promise<Float32Array[]>;
  /** Releases the onnxruntime session; later calls throw invalid_argument. */
  close(): Promise<void>;
}

/**
 * Loads `onnxFile` (exported from `model.params` by exportFusionToOnnx) and checks it: one
 * float input [N, D] with the model's D, and the same outputs as the TypeScript forward pass
 * on two probe inputs. Throws model_missing when the file does not exist, model_corrupt when
 * onnxruntime cannot load it, model_mismatch when its D, its output or its weights differ
 * from the model, invalid_argument for a model whose header and weights disagree or an
 * execution provider onnxruntime does not have.
 */
export async function createOnnxFusion(
  model: GatedFusionModel,
  onnxFile: string,
  options: OnnxFusionOptions = {},
): Promise<OnnxFusion> {
  checkGatedFusionModel(model);
  const executionProviders = options.executionProviders ?? ['cpu'];
  const maxBatch = options.maxBatch ?? 256;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) {
    const message = `maxBatch must be a positive integer, got ${maxBatch}`;
    throw new ReidbError('invalid_argument', message, { input: 'maxBatch' });
  }

  const { params } = model;
  const inputDim = params.appearanceDim + params.geometryDim;
  const outputDim = params.fc3.outputs;
  const bytes = readOnnxFile(onnxFile, 'ONNX fusion');
  const session = await openOnnxSession(bytes, onnxFile, executionProviders, 'ONNX fusion');
  const runner: Runner = { session, file: onnxFile, inputDim, outputDim };
  try {
    checkLayout(runner);
    await probe(runner, params);
  } catch (error) {
    await session.release();
    throw error;
  }

  const typescript = createGatedFusion(model);
  let closed = false;
  const checkOpen = () => {
    if (closed) {
      throw new ReidbError('invalid_argument', `fusion ${typescript.id} is closed`, {
        input: typescript.id,
      });
    }
  };

  return Object.freeze({
    id: typescript.id,
    dim: typescript.dim,

    fuse(appearance: Float32Array, geometry: Float32Array): Float32Array {
      checkOpen();
      return typescript.fuse(appearance, geometry);
    },

    async fuseBatch(xs: readonly Float32Array[]): Promise<Float32Array[]> {
      checkOpen();
      xs.forEach((x, i) => checkInput(x, inputDim, `xs[${i}]`));

      const out: Float32Array[] = [];
      for (let start = 0; start < xs.length; start += maxBatch) {
        out.push(...(await runBatch(runner, xs.slice(start, start + maxBatch))));
      }
      return out;
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await session.release();
    },
  });
}

/** A loaded session and the shapes it must have. */
interface Runner {
  session: InferenceSession;
  file: string;
  inputDim: number;
  outputDim: number;
}

function mismatch(runner: Runner, what: string, details?: Record<string, unknown>): ReidbError {
  return new ReidbError('model_mismatch', `ONNX fusion ${runner.file} does not fit: ${what}`, {
    input: runner.file,
    details,
  });
}

/** One float input named x of shape [N, D] (N symbolic or any), one output named h. */
function checkLayout(runner: Runner): void {
  const { session, inputDim } = runner;
  if (session.inputNames.length !== 1 || session.inputNames[0] !== ONNX_FUSION_INPUT) {
    const names = session.inputNames;
    throw mismatch(runner, `inputs [${names}], needs one named '${ONNX_FUSION_INPUT}'`);
  }
  if (!session.outputNames.includes(ONNX_FUSION_OUTPUT)) {
    throw mismatch(runner, `outputs [${session.outputNames}], needs '${ONNX_FUSION_OUTPUT}'`);
  }

  const input = session.inputMetadata[0];
  if (input !== undefined && input.isTensor) {
    if (input.type !== 'float32') {
      throw mismatch(runner, `input '${input.name}' is ${input.type}, needs float32`);
    }
    const width = input.shape[1];
    if (input.shape.length !== 2 || (typeof width === 'number' && width !== inputDim)) {
      throw mismatch(
        runner,
        `input '${input.name}' has shape [${input.shape}], the fusion model needs [N, ${inputDim}]`,
        { shape: input.shape, inputDim },
      );
    }
  }
}

/**
 * Runs two deterministic inputs through the session and the TypeScript forward pass; they
 * must agree within PROBE_TOLERANCE.
 */
async function probe(runner: Runner, params: GatedFusionParams): Promise<void> {
  const xs = [0, 1].map((k) =>
    Float32Array.from({ length: runner.inputDim }, (_, i) => Math.sin(1 + i * (0.7 + 0.3 * k))),
  );

  let got: Float32Array[];
  try {
    got = await runBatch(runner, xs);
  } catch (cause) {
    if (cause instanceof ReidbError) throw cause;
    const message = cause instanceof Error ? cause.message : String(cause);
    throw mismatch(runner, `it fails on a [2, ${runner.inputDim}] input: ${message}`);
  }

  let worst = 0;
  xs.forEach((x, k) => {
    const want = forwardGatedFusion(params, x);
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[k][i] - want[i]));
  });
  if (!(worst <= PROBE_TOLERANCE)) {
    throw mismatch(
      runner,
      `its outputs differ from the fusion model's by up to ${worst} on probe inputs ` +
        `(allowed ${PROBE_TOLERANCE}); it was exported from other weights`,
      { maxAbsDifference: worst },
    );
  }
}

function checkInput(x: Float32Array, dim: number, what: string): void {
  if (!(x instanceof Float32Array) || x.length !== dim) {
    const got = x instanceof Float32Array ? `${x.length}` : typeof x;
    const message = `${what} must be a Float32Array of length ${dim}, got ${got}`;
    throw new ReidbError('invalid_argument', message, { input: what });
  }
  for (let i = 0; i < dim; i++) {
    if (!Number.isFinite(x[i])) {
      throw new ReidbError('invalid_argument', `${what}[${i}] is not finite (${x[i]})`, {
        input: what,
      });
    }
  }
}

/** One inference run over a batch of already-checked inputs; rows of unit length. */
async function runBatch(runner: Runner, xs: readonly Float32Array[]): Promise<Float32Array[]> {
  if (xs.length === 0) return [];
  const { session, inputDim, outputDim } = runner;

  const packed = new Float32Array(xs.length * inputDim);
  xs.forEach((x, n) => packed.set(x, n * inputDim));
  const feeds = { [ONNX_FUSION_INPUT]: new Tensor('float32', packed, [xs.length, inputDim]) };
  const result = await session.run(feeds, [ONNX_FUSION_OUTPUT]);
  const output = result[ONNX_FUSION_OUTPUT] as Tensor;

  const dims = output.dims;
  const shapeOk = dims.length === 2 && dims[0] === xs.length && dims[1] === outputDim;
  if (output.type !== 'float32' || !shapeOk) {
    throw mismatch(
      runner,
      `output '${ONNX_FUSION_OUTPUT}' is ${output.type} [${dims}] for ${xs.length} inputs, ` +
        `needs float32 [${xs.length}, ${outputDim}]`,
      { dims, type: output.type },
    );
  }

  // Copy each row out of onnxruntime's buffer; a zero row divides to NaN.
  const data = output.data as Float32Array;
  return xs.map((_, n) => {
    const row = data.slice(n * outputDim, (n + 1) * outputDim);
    if (row.some((value) => !Number.isFinite(value))) {
      throw new ReidbError(
        'invalid_argument',
        `the fusion network maps input ${n} of this batch to the zero vector`,
        { input: 'xs' },
      );
    }
    return row;
  });
}
