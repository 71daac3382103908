/**
 * The learned gated fusion of METHOD.md step 7, served in plain TypeScript. Read as
 *
 *   x  = [a / ||a|| ; (g - mean) / std]          (D = appearanceDim + geometryDim)
 *   s  = sigmoid(x Wg + bg)                       gate, D -> D
 *   u  = s * x                                    each input feature re-weighted by its gate
 *   h1 = relu(u W1 + b1)                          FC1, D -> 512
 *   h2 = relu(h1 W2 + b2)                         FC2, 512 -> 256
 *   h  = h2 W3 + b3                               FC3, 256 -> 128, linear
 *   out = h / ||h||
 *
 * The source's literal h = sigmoid(W_g x) * MLP(x) multiplies a D-vector by a 128-vector and
 * is undefined; its parameter table (gate 638 -> 638) fits only this reading. docs/FUSION.md
 * says why at length. The weights come from src/train (see gated-fusion-types.ts) through a
 * model file (fusion-model-file.ts); onnx-fusion.ts runs the same network on onnxruntime.
 */
import { ReidbError } from '../errors.ts';
import { referenceGeometryStats, type Fusion, type GeometryStats } from './fusion.ts';
import type { DenseLayer, FusionModelHeader, GatedFusionParams } from './gated-fusion-types.ts';
import { GEOMETRY_DIM } from './geometry.ts';

/** Hidden and output widths of the MLP after the gate. */
export interface FusionLayerSizes {
  /** FC1 outputs (512 in METHOD.md). */
  hidden1: number;
  /** FC2 outputs (256). */
  hidden2: number;
  /** FC3 outputs: the fused embedding's dimension (128). */
  output: number;
}

/**
 * METHOD.md's widths. Model files and the gallery use only these; other sizes exist so tests
 * can build networks small enough to check by hand.
 */
export const STANDARD_LAYER_SIZES: Readonly<FusionLayerSizes> = Object.freeze({
  hidden1: 512,
  hidden2: 256,
  output: 128,
});

/** Dimension of the fused embedding with the standard sizes. */
export const FUSED_DIM = STANDARD_LAYER_SIZES.output;

/**
 * Standard deviations below this are raised to it when the geometry is z-scored, so a feature
 * that never varied in the statistics is not blown up by a division by almost zero. The same
 * floor as the concat fusion's.
 */
export const MIN_GEOMETRY_STD = 1e-6;

/**
 * Initial gate bias: sigmoid(2) = 0.88, so every gate starts nearly open and the network
 * starts close to a plain MLP on x; training then closes the gates on features that hurt.
 * A zero bias would start every gate near 0.5, halving all inputs for FC1 to undo.
 */
export const DEFAULT_GATE_BIAS = 2;

/** A trained (or initialised) model as read from, or written to, a model file. */
export interface GatedFusionModel {
  header: FusionModelHeader;
  params: GatedFusionParams;
}

/** One layer's shape and activation. */
export interface LayerShape {
  inputs: number;
  outputs: number;
  activation: 'sigmoid' | 'relu' | 'linear';
}

/** The network's layer shapes and learned parameter counts (weights + biases per layer). */
export interface GatedFusionShapes {
  appearanceDim: number;
  geometryDim: number;
  /** D = appearanceDim + geometryDim. */
  inputDim: number;
  outputDim: number;
  layers: { gate: LayerShape; fc1: LayerShape; fc2: LayerShape; fc3: LayerShape };
  /**
   * Learned parameters per layer and in total. The geometry mean and std stored beside them
   * are fixed statistics, not counted here.
   */
  parameterCounts: { gate: number; fc1: number; fc2: number; fc3: number; total: number };
}

function invalid(message: string, input?: string): ReidbError {
  return new ReidbError('invalid_argument', message, { input });
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1;
}

/**
 * Layer shapes and parameter counts for an appearance embedding of `appearanceDim` and a
 * geometric descriptor of `geometryDim`. For ArcFace (512 + 126 = 638) the counts are gate
 * 407,682, FC1 327,168, FC2 131,328 and FC3 32,896; for dlib (128 + 126 = 254) gate 64,770,
 * FC1 130,560 and the same FC2 and FC3. `sizes` overrides the MLP widths (tests only).
 */
export function gatedFusionShapes(
  appearanceDim: number,
  geometryDim: number,
  sizes: FusionLayerSizes = STANDARD_LAYER_SIZES,
): GatedFusionShapes {
  checkDims(appearanceDim, geometryDim, sizes);
  const inputDim = appearanceDim + geometryDim;
  const layers = {
    gate: { inputs: inputDim, outputs: inputDim, activation: 'sigmoid' as const },
    fc1: { inputs: inputDim, outputs: sizes.hidden1, activation: 'relu' as const },
    fc2: { inputs: sizes.hidden1, outputs: sizes.hidden2, activation: 'relu' as const },
    fc3: { inputs: sizes.hidden2, outputs: sizes.output, activation: 'linear' as const },
  };

  const count = (layer: LayerShape) => layer.inputs * layer.outputs + layer.outputs;
  const gate = count(layers.gate);
  const fc1 = count(layers.fc1);
  const fc2 = count(layers.fc2);
  const fc3 = count(layers.fc3);
  return {
    appearanceDim,
    geometryDim,
    inputDim,
    outputDim: sizes.output,
    layers,
    parameterCounts: { gate, fc1, fc2, fc3, total: gate + fc1 + fc2 + fc3 },
  };
}

function checkDims(appearanceDim: number, geometryDim: number, sizes: FusionLayerSizes): void {
  const named: [string, unknown][] = [
    ['appearanceDim', appearanceDim],
    ['geometryDim', geometryDim],
    ['sizes.hidden1', sizes.hidden1],
    ['sizes.hidden2', sizes.hidden2],
    ['sizes.output', sizes.output],
  ];
  for (const [name, value] of named) {
    if (!isPositiveInteger(value)) {
      throw invalid(`${name} must be a positive integer, got ${value}`, name);
    }
  }
}

/** The MLP widths a parameter set was built with. */
export function layerSizesOf(params: GatedFusionParams): FusionLayerSizes {
  return { hidden1: params.fc1.outputs, hidden2: params.fc2.outputs, output: params.fc3.outputs };
}

/**
 * What is wrong with a parameter set's shapes, or undefined when they chain correctly (gate
 * D -> D, FC1 D -> h1, FC2 h1 -> h2, FC3 h2 -> out, every array of the length its layer
 * says). With `checkValues`, also the first non-finite weight or negative std. O(1) without
 * `checkValues`, O(parameters) with it.
 */
export function gatedFusionParamsProblem(
  params: GatedFusionParams,
  checkValues = false,
): string | undefined {
  if (params === null || typeof params !== 'object') return 'params is not an object';
  const { appearanceDim, geometryDim } = params;
  if (!isPositiveInteger(appearanceDim)) return `appearanceDim is ${appearanceDim}`;
  if (!isPositiveInteger(geometryDim)) return `geometryDim is ${geometryDim}`;
  const inputDim = appearanceDim + geometryDim;

  for (const name of ['geometryMean', 'geometryStd'] as const) {
    const array = params[name];
    if (!(array instanceof Float32Array) || array.length !== geometryDim) {
      return `${name} must be a Float32Array of ${geometryDim} values`;
    }
  }

  const chain: [string, DenseLayer, number][] = [
    ['gate', params.gate, inputDim],
    ['fc1', params.fc1, inputDim],
    ['fc2', params.fc2, params.fc1?.outputs],
    ['fc3', params.fc3, params.fc2?.outputs],
  ];
  for (const [name, layer, inputs] of chain) {
    if (layer === null || typeof layer !== 'object') return `${name} is missing`;
    if (!isPositiveInteger(layer.outputs)) return `${name}.outputs is ${layer.outputs}`;
    if (layer.inputs !== inputs) return `${name} has ${layer.inputs} inputs, needs ${inputs}`;
    if (!(layer.weight instanceof Float32Array) || layer.weight.length !== inputs * layer.outputs) {
      return `${name}.weight must be a Float32Array of ${inputs} x ${layer.outputs} values`;
    }
    if (!(layer.bias instanceof Float32Array) || layer.bias.length !== layer.outputs) {
      return `${name}.bias must be a Float32Array of ${layer.outputs} values`;
    }
  }
  if (params.gate.outputs !== inputDim) {
    return `gate has ${params.gate.outputs} outputs, needs ${inputDim} (one per input feature)`;
  }
  if (!checkValues) return undefined;

  const arrays: [string, Float32Array][] = [
    ['geometryMean', params.geometryMean],
    ['geometryStd', params.geometryStd],
    ...chain.flatMap(([name, layer]): [string, Float32Array][] => [
      [`${name}.weight`, layer.weight],
      [`${name}.bias`, layer.bias],
    ]),
  ];
  for (const [name, array] of arrays) {
    for (let i = 0; i < array.length; i++) {
      if (!Number.isFinite(array[i])) return `${name}[${i}] is ${array[i]}`;
    }
  }
  if (params.geometryStd.some((value) => value < 0)) return 'geometryStd has a negative value';
  return undefined;
}

/** Throws invalid_argument when the parameters do not chain (see gatedFusionParamsProblem). */
function checkParams(params: GatedFusionParams, checkValues: boolean): void {
  const problem = gatedFusionParamsProblem(params, checkValues);
  if (problem !== undefined) throw invalid(`gated fusion parameters: ${problem}`, 'params');
}

/** Checks length and finiteness of one input vector. */
function checkVector(vector: Float32Array, dim: number, what: string): void {
  if (!(vector instanceof Float32Array) || vector.length !== dim) {
    const got = vector instanceof Float32Array ? `${vector.length}` : typeof vector;
    throw invalid(`${what} must be a Float32Array of length ${dim}, got ${got}`, what);
  }
  for (let i = 0; i < dim; i++) {
    if (!Number.isFinite(vector[i])) {
      throw invalid(`${what}[${i}] is not finite (${vector[i]})`, what);
    }
  }
}

/**
 * The network's input x (length D = appearanceDim + geometryDim) for one face: the appearance
 * embedding scaled to unit length (cosine geometry of the embedder kept, its arbitrary scale
 * dropped), then each geometric feature z-scored as (g - mean) / max(std, 1e-6) with the
 * model's stored statistics (unitless, about N(0, 1) over real faces). Training and serving
 * must both build x here. Throws invalid_argument on a wrong length, a non-finite value or a
 * zero appearance embedding.
 */
export function buildFusionInput(
  params: GatedFusionParams,
  appearance: Float32Array,
  geometry: Float32Array,
): Float32Array {
  checkParams(params, false);
  const { appearanceDim, geometryDim, geometryMean, geometryStd } = params;
  checkVector(appearance, appearanceDim, 'appearance');
  checkVector(geometry, geometryDim, 'geometry');

  // Appearance block: unit length, norm accumulated in float64.
  let sum = 0;
  for (let i = 0; i < appearanceDim; i++) sum += appearance[i] * appearance[i];
  const norm = Math.sqrt(sum);
  if (!(norm > 0)) throw invalid('appearance embedding has zero length', 'appearance');
  const x = new Float32Array(appearanceDim + geometryDim);
  for (let i = 0; i < appearanceDim; i++) x[i] = appearance[i] / norm;

  // Geometry block: z-scores against the model's statistics.
  for (let j = 0; j < geometryDim; j++) {
    const std = Math.max(geometryStd[j], MIN_GEOMETRY_STD);
    x[appearanceDim + j] = (geometry[j] - geometryMean[j]) / std;
  }
  return x;
}

/**
 * out = input W + b into a fresh float64 array. Zero inputs (about half of them after a ReLU)
 * are skipped; the rest are taken four rows of W at a time, walking each row in memory order,
 * so each output is loaded and stored once per four rows. About 5x faster in V8 than the
 * plain double loop.
 */
function dense(layer: DenseLayer, input: Float64Array): Float64Array {
  const { inputs, outputs, weight } = layer;
  const out = Float64Array.from(layer.bias);

  // Indices of the non-zero inputs.
  const live = new Int32Array(inputs);
  let count = 0;
  for (let i = 0; i < inputs; i++) if (input[i] !== 0) live[count++] = i;

  let k = 0;
  for (; k + 3 < count; k += 4) {
    const i0 = live[k];
    const i1 = live[k + 1];
    const i2 = live[k + 2];
    const i3 = live[k + 3];
    const v0 = input[i0];
    const v1 = input[i1];
    const v2 = input[i2];
    const v3 = input[i3];
    const r0 = i0 * outputs;
    const r1 = i1 * outputs;
    const r2 = i2 * outputs;
    const r3 = i3 * outputs;
    for (let o = 0; o < outputs; o++) {
      const a = v0 * weight[r0 + o] + v1 * weight[r1 + o];
      out[o] += a + v2 * weight[r2 + o] + v3 * weight[r3 + o];
    }
  }
  for (; k < count; k++) {
    const v = input[live[k]];
    const row = live[k] * outputs;
    for (let o = 0; o < outputs; o++) out[o] += v * weight[row + o];
  }
  return out;
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

/** The gate s = sigmoid(x Wg + bg), each in (0, 1), float64. */
function gate(params: GatedFusionParams, x: Float64Array): Float64Array {
  const s = dense(params.gate, x);
  for (let i = 0; i < s.length; i++) s[i] = sigmoid(s[i]);
  return s;
}

function checkInput(params: GatedFusionParams, x: Float32Array): void {
  checkParams(params, false);
  checkVector(x, params.appearanceDim + params.geometryDim, 'x');
}

/**
 * The fused embedding of one input x (from buildFusionInput): the network of the module
 * comment, computed in float64 and returned as float32 of unit length (fc3.outputs values,
 * 128 for the standard sizes). Throws invalid_argument on a wrong or non-finite x, and when
 * the network maps x to the zero vector, which has no direction to compare.
 */
export function forwardGatedFusion(params: GatedFusionParams, x: Float32Array): Float32Array {
  checkInput(params, x);

  // Gate, then each feature re-weighted by its own gate.
  const x64 = Float64Array.from(x);
  const u = gate(params, x64);
  for (let i = 0; i < u.length; i++) u[i] *= x64[i];

  // MLP: two ReLU layers and a linear one.
  const h1 = dense(params.fc1, u);
  for (let i = 0; i < h1.length; i++) if (h1[i] < 0) h1[i] = 0;
  const h2 = dense(params.fc2, h1);
  for (let i = 0; i < h2.length; i++) if (h2[i] < 0) h2[i] = 0;
  const h = dense(params.fc3, h2);

  // Unit length, for cosine matching.
  let sum = 0;
  for (let i = 0; i < h.length; i++) sum += h[i] * h[i];
  const norm = Math.sqrt(sum);
  if (!(norm > 0)) throw invalid('the fusion network maps this input to the zero vector', 'x');
  return Float32Array.from(h, (value) => value / norm);
}

/** The gate values sigmoid(x Wg + bg) for one input x: D values, each in (0, 1). */
export function gateWeights(params: GatedFusionParams, x: Float32Array): Float32Array {
  checkInput(params, x);
  return Float32Array.from(gate(params, Float64Array.from(x)));
}

/**
 * Mean gate over a set of inputs, separately over the appearance features (the first
 * appearanceDim of x) and the geometric ones: how much of each part the network lets
 * through, in (0, 1). Needs at least one input.
 */
export function meanGate(
  params: GatedFusionParams,
  xs: readonly Float32Array[],
): { appearance: number; geometry: number } {
  if (xs.length === 0) throw invalid('meanGate needs at least one input', 'xs');
  const { appearanceDim, geometryDim } = params;

  let appearance = 0;
  let geometry = 0;
  for (const x of xs) {
    const s = gateWeights(params, x);
    for (let i = 0; i < appearanceDim; i++) appearance += s[i];
    for (let j = 0; j < geometryDim; j++) geometry += s[appearanceDim + j];
  }
  return {
    appearance: appearance / (xs.length * appearanceDim),
    geometry: geometry / (xs.length * geometryDim),
  };
}

/**
 * Checks that a model's header describes its parameters (dims, output width) and that every
 * weight is finite. Throws invalid_argument.
 */
export function checkGatedFusionModel(model: GatedFusionModel): void {
  const { header, params } = model;
  checkParams(params, true);

  const facts: [string, unknown, number][] = [
    ['appearanceDim', header.appearanceDim, params.appearanceDim],
    ['geometryDim', header.geometryDim, params.geometryDim],
    ['inputDim', header.inputDim, params.appearanceDim + params.geometryDim],
    ['outputDim', header.outputDim, params.fc3.outputs],
  ];
  for (const [name, said, actual] of facts) {
    if (said !== actual) {
      throw invalid(`fusion model header says ${name} ${said}, its weights have ${actual}`, name);
    }
  }
  if (typeof header.id !== 'string' || header.id.length === 0) {
    throw invalid('fusion model header has no id', 'id');
  }
}

/**
 * A Fusion running a trained model in plain TypeScript: id = header.id, dim = 128 (the
 * model's output width). fuse() builds x with buildFusionInput and returns
 * forwardGatedFusion(x): 0.26-0.54 ms per face for dlib's 254-D input, 0.7-1.5 ms for
 * ArcFace's 638-D, on the shared 2-core development machine (docs/FUSION.md). Throws
 * invalid_argument when the header and the weights disagree or a weight is not finite.
 */
export function createGatedFusion(model: GatedFusionModel): Fusion {
  checkGatedFusionModel(model);
  const { header, params } = model;

  return Object.freeze({
    id: header.id,
    dim: params.fc3.outputs,
    fuse(appearance: Float32Array, geometry: Float32Array): Float32Array {
      return forwardGatedFusion(params, buildFusionInput(params, appearance, geometry));
    },
  });
}

/** A seeded uniform generator on [0, 1) (a 32-bit counter hashed by two multiply-xorshifts). */
function uniformGenerator(seed: number): () => number {
  let counter = seed >>> 0;
  return () => {
    counter = (counter + 0x9e3779b9) >>> 0;
    let z = counter;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    return (z >>> 0) / 2 ** 32;
  };
}

/** A dense layer with Glorot-uniform weights (limit sqrt(6 / (in + out))) and a constant bias. */
function glorotLayer(
  inputs: number,
  outputs: number,
  biasValue: number,
  next: () => number,
): DenseLayer {
  const limit = Math.sqrt(6 / (inputs + outputs));
  const weight = new Float32Array(inputs * outputs);
  for (let i = 0; i < weight.length; i++) weight[i] = (2 * next() - 1) * limit;
  return { inputs, outputs, weight, bias: new Float32Array(outputs).fill(biasValue) };
}

/** Options of initGatedFusionParams. */
export interface InitGatedFusionOptions {
  /** Initial value of every gate bias; default DEFAULT_GATE_BIAS (2, gates start at 0.88). */
  gateBias?: number;
  /** MLP widths; default STANDARD_LAYER_SIZES. Other sizes are for tests only. */
  sizes?: FusionLayerSizes;
  /**
   * 'glorot' (default): plain Glorot-uniform weights. 'appearance-identity': weights chosen
   * so that the untrained network returns the appearance embedding itself (see
   * appearanceIdentityInit), plus Glorot noise scaled by `noise` (default 0.01).
   */
  init?: 'glorot' | 'appearance-identity';
  noise?: number;
}

/**
 * Fresh parameters: Glorot-uniform weights from a generator seeded with `seed` (an integer
 * in [0, 2^32); the same seed gives the same bytes), FC biases 0 and gate biases
 * options.gateBias (default 2, see DEFAULT_GATE_BIAS). `geometryStats` (geometryDim values
 * each) defaults to referenceGeometryStats() when geometryDim is 126, else mean 0 and std 1.
 * The trainer's starting point, and the tests' source of realistic shapes.
 */
export function initGatedFusionParams(
  appearanceDim: number,
  geometryDim: number,
  seed: number,
  geometryStats?: GeometryStats,
  options: InitGatedFusionOptions = {},
): GatedFusionParams {
  const sizes = options.sizes ?? STANDARD_LAYER_SIZES;
  const gateBias = options.gateBias ?? DEFAULT_GATE_BIAS;
  const shapes = gatedFusionShapes(appearanceDim, geometryDim, sizes);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
    throw invalid(`seed must be an integer in [0, 2^32), got ${seed}`, 'seed');
  }
  if (!Number.isFinite(gateBias)) throw invalid(`gateBias must be finite, got ${gateBias}`);

  // Geometry statistics: given, the built-in reference, or the identity z-score.
  let stats: GeometryStats;
  if (geometryStats !== undefined) {
    checkVector(geometryStats.mean, geometryDim, 'geometryStats.mean');
    checkVector(geometryStats.std, geometryDim, 'geometryStats.std');
    stats = { mean: geometryStats.mean.slice(), std: geometryStats.std.slice() };
  } else if (geometryDim === GEOMETRY_DIM) {
    stats = referenceGeometryStats();
  } else {
    stats = { mean: new Float32Array(geometryDim), std: new Float32Array(geometryDim).fill(1) };
  }

  // Layers in a fixed order, so a seed always gives the same weights.
  const next = uniformGenerator(seed);
  const { gate: g, fc1, fc2, fc3 } = shapes.layers;
  const params: GatedFusionParams = {
    appearanceDim,
    geometryDim,
    geometryMean: stats.mean,
    geometryStd: stats.std,
    gate: glorotLayer(g.inputs, g.outputs, gateBias, next),
    fc1: glorotLayer(fc1.inputs, fc1.outputs, 0, next),
    fc2: glorotLayer(fc2.inputs, fc2.outputs, 0, next),
    fc3: glorotLayer(fc3.inputs, fc3.outputs, 0, next),
  };
  if (options.init === 'appearance-identity') {
    appearanceIdentityInit(params, options.noise ?? 0.01);
  }
  return params;
}

/** Whether appearanceIdentityInit fits these widths (it needs 2 A hidden units and A outputs). */
export function canInitAsAppearanceIdentity(
  appearanceDim: number,
  sizes: FusionLayerSizes = STANDARD_LAYER_SIZES,
): boolean {
  const a = appearanceDim;
  return sizes.hidden1 >= 2 * a && sizes.hidden2 >= 2 * a && sizes.output >= a;
}

/**
 * Rewrites Glorot-initialised parameters in place so that the untrained fusion returns the
 * appearance embedding: FC1 splits each appearance value a_i into relu(a_i) and relu(-a_i)
 * (units i and A + i), FC2 passes both through, FC3 subtracts them, so h = gate * a before
 * the final L2 normalisation removes the gate's near-uniform scale (the gate's weights are
 * shrunk to `noise` so that it starts open at sigmoid(bias) for every feature). Every other
 * weight, geometry's included, keeps `noise` times its Glorot value, so training starts at
 * appearance-only accuracy and can only move away from it where that lowers the loss. The
 * parameter counts are METHOD.md's; only the starting point differs.
 */
function appearanceIdentityInit(params: GatedFusionParams, noise: number): void {
  const a = params.appearanceDim;
  const sizes = {
    hidden1: params.fc1.outputs,
    hidden2: params.fc2.outputs,
    output: params.fc3.outputs,
  };
  if (!canInitAsAppearanceIdentity(a, sizes)) {
    throw invalid(
      `appearance-identity init needs hidden widths >= ${2 * a} and output >= ${a}; ` +
        `these are ${sizes.hidden1}/${sizes.hidden2}/${sizes.output}`,
      'init',
    );
  }

  for (const layer of [params.gate, params.fc1, params.fc2, params.fc3]) {
    for (let i = 0; i < layer.weight.length; i++) layer.weight[i] *= noise;
  }
  const set = (layer: DenseLayer, input: number, output: number, value: number): void => {
    layer.weight[input * layer.outputs + output] += value;
  };
  for (let i = 0; i < a; i++) {
    set(params.fc1, i, i, 1);
    set(params.fc1, i, a + i, -1);
    set(params.fc2, i, i, 1);
    set(params.fc2, a + i, a + i, 1);
    set(params.fc3, i, i, 1);
    set(params.fc3, a + i, i, -1);
  }
}
