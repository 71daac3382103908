/**
 * Training of the learned gated fusion (METHOD.md, "Training the fusion") on cached features:
 * identity-disjoint split, P x K batches, 0.7 * batch-hard triplet (adaptive margin) + 0.3 *
 * cross-entropy, AdamW with cosine annealing (or SGD with momentum and step decay), validation
 * mAP / Rank-1 every epoch, early stopping, and the best epoch's weights returned.
 *
 * The network is the one of src/features/gated-fusion.ts, written here again as tfjs ops so it
 * can be differentiated; its input x comes from the same buildFusionInput, and the tests check
 * that both forward passes agree. Every face's x is built once and the training set is held as
 * one tensor, so an epoch costs only the batches' matrix products.
 *
 * tfjs keeps one backend per thread: training selects options.backend for the whole thread.
 */
import { cmcAndMap, type EvalItem } from '../bench/metrics.ts';
import { ReidbError } from '../errors.ts';
import type { GeometryStats } from '../features/fusion.ts';
import {
  buildFusionInput,
  canInitAsAppearanceIdentity,
  forwardGatedFusion,
  initGatedFusionParams,
  STANDARD_LAYER_SIZES,
  type FusionLayerSizes,
} from '../features/gated-fusion.ts';
import type {
  DenseLayer,
  FusionModelHeader,
  GatedFusionParams,
} from '../features/gated-fusion-types.ts';
import { silentLogger, type Logger } from '../log.ts';
import { initTf, tf, type TfBackend } from '../tf/runtime.ts';
import type { FeatureCache } from './feature-cache.ts';
import {
  checkLossWeights,
  DEFAULT_LOSS_WEIGHTS,
  fusionLoss,
  l2NormalizeRows,
  type LossWeights,
} from './losses.ts';
import {
  cosineAnnealing,
  createAdamW,
  createSgd,
  stepDecay,
  type OptimisedVariable,
  type Optimiser,
} from './optim.ts';
import { createPKSampler, mulberry32 } from './sampler.ts';
import { splitByIdentity, type IdentitySplit } from './split.ts';

export interface TrainOptions {
  /** Share of identities held out for validation, in (0, 1); default 0.2. */
  valShare?: number;
  /** Maximum epochs (default 60); early stopping may end sooner. */
  epochs?: number;
  /** Identities per batch (default 16) and images per identity (default 8). */
  p?: number;
  k?: number;
  /** 'adamw' (default) or 'sgd'. */
  optimiser?: 'adamw' | 'sgd';
  /** Peak learning rate; default 3e-4 for AdamW, 0.1 for SGD. */
  lr?: number;
  /**
   * Weight decay on weight matrices (never biases). AdamW: decoupled, default 0.05. SGD: L2
   * added to the gradient, default 5e-4 (0.05 coupled at lr 0.1 would shrink every weight by
   * 0.5 % a step).
   */
  weightDecay?: number;
  /** SGD momentum (default 0.9). */
  momentum?: number;
  /** Loss weights (default triplet 0.7, CE 0.3). */
  lossWeights?: LossWeights;
  /** Triplet margin: 'adaptive' (default, see losses.ts) or a fixed number. */
  margin?: 'adaptive' | number;
  /** Seed of the split, the sampler and both initialisations (default 1). */
  seed?: number;
  /** Epochs without a better val mAP before stopping (default 10). */
  patience?: number;
  /**
   * tfjs backend for the thread; default 'wasm' (about 5x faster than 'cpu' on the real caches,
   * losses equal to about 1e-7).
   */
  backend?: TfBackend;
  logger?: Logger;
  /** Called after each epoch (1-based) with its losses and validation figures. */
  onProgress?: (epoch: number, progress: EpochProgress) => void;
  /** Names of the data the cache came from, recorded in the header (default []). */
  data?: string[];
  /**
   * Geometry statistics stored in the parameters and used by buildFusionInput to z-score the
   * geometry; default: mean and population std of the training faces' geometry.
   */
  geometryStats?: GeometryStats;
  /** MLP widths; default METHOD.md's 512 / 256 / 128. Other sizes are for tests only. */
  sizes?: FusionLayerSizes;
  /**
   * Starting point: 'appearance-identity' (default, where the widths allow it: the untrained
   * fusion returns the appearance embedding, so training starts at appearance-only accuracy)
   * or 'glorot' (random, as the source describes).
   */
  init?: 'appearance-identity' | 'glorot';
}

/** One epoch's figures. Losses are means over the epoch's batches. */
export interface EpochProgress {
  triplet: number;
  ce: number;
  total: number;
  /** Mean triplet margin alpha over the epoch's batches (cosine distance units). */
  margin: number;
  /** Leave-one-out mAP and Rank-1 over the validation faces, by cosine similarity, in [0, 1]. */
  valMAP: number;
  valRank1: number;
  /** Learning rate at the epoch's last step. */
  lr: number;
  /** Wall-clock seconds of this epoch (training and validation). */
  seconds: number;
  /** Estimate for the remaining epochs if none stops early, in seconds. */
  secondsLeft: number;
}

export interface EpochRecord extends EpochProgress {
  epoch: number;
}

/** Validation figures of one model on the validation faces. */
export interface ValFigures {
  valMAP: number;
  valRank1: number;
}

export interface TrainResult {
  /** The best epoch's parameters (the initial ones if no epoch beat them). */
  params: GatedFusionParams;
  header: Omit<FusionModelHeader, 'id' | 'weightsSha256'>;
  history: EpochRecord[];
  /** Epoch 0 is the untrained network. */
  best: { epoch: number; valMAP: number; valRank1: number };
  /** The untrained network on the validation faces. */
  initial: ValFigures;
  /** Cosine of the L2-normalised appearance embeddings alone, on the same validation faces. */
  appearanceOnly: ValFigures;
  split: IdentitySplit;
  /** True when patience ran out before options.epochs. */
  stoppedEarly: boolean;
  /** Mean wall-clock seconds per epoch. */
  secondsPerEpoch: number;
}

/** The trained tensors: the network's layers, then the CE classifier W_c. */
interface NetworkVariables {
  layers: Record<LayerName, { weight: tf.Variable; bias: tf.Variable }>;
  classifier: { weight: tf.Variable; bias: tf.Variable };
}

type LayerName = 'gate' | 'fc1' | 'fc2' | 'fc3';

const LAYERS: readonly LayerName[] = ['gate', 'fc1', 'fc2', 'fc3'];

/**
 * Trains a gated fusion on a feature cache. The cache's identities are split by
 * splitByIdentity(faces, valShare, seed); the geometry is z-scored with the training faces' own
 * mean and std (kept in the parameters); the network starts from
 * initGatedFusionParams(..., seed). Each epoch visits every training face about once in P x K
 * batches and ends with a validation pass; the parameters of the epoch with the best val mAP
 * (epoch 0 = untrained included) are returned. Same cache, options and seed give the same
 * parameters. Throws invalid_argument for bad options, a cache with fewer than 2 training
 * identities or no scorable validation face, and when the loss stops being finite.
 */
export async function trainGatedFusion(
  cache: FeatureCache,
  options: TrainOptions = {},
): Promise<TrainResult> {
  const settings = resolveOptions(options);
  const logger = options.logger ?? silentLogger;
  await initTf(settings.backend);

  // Split and statistics; inputs built once per face.
  const split = splitByIdentity(cache.faces, settings.valShare, settings.seed);
  // Augmented copies train; validation sees only real photos of its identities.
  split.val = split.val.filter((i) => cache.faces[i].tags?.augmented === undefined);
  checkSplit(cache, split);
  const stats = options.geometryStats ?? geometryStatsOf(cache, split.train);
  const sizes = options.sizes ?? STANDARD_LAYER_SIZES;
  const init =
    (options.init ?? 'appearance-identity') === 'appearance-identity' &&
    canInitAsAppearanceIdentity(cache.appearanceDim, sizes)
      ? 'appearance-identity'
      : 'glorot';
  const initialParams = initGatedFusionParams(
    cache.appearanceDim,
    cache.geometryDim,
    settings.seed,
    stats,
    {
      sizes,
      init,
    },
  );
  const inputOf = (i: number) =>
    buildFusionInput(initialParams, cache.faces[i].appearance, cache.faces[i].geometry);
  const classOf = new Map(split.trainIdentities.map((identity, c) => [identity, c]));
  const trainLabels = split.train.map((i) => classOf.get(cache.faces[i].identity)!);
  const valItems: EvalItem[] = split.val.map((i) => ({ pid: cache.faces[i].identity }));
  logger.info('fusion training: data', {
    trainIdentities: split.trainIdentities.length,
    trainFaces: split.train.length,
    valIdentities: split.valIdentities.length,
    valFaces: split.val.length,
    droppedIdentities: split.droppedIdentities.length,
  });

  const trainX = stackRows(split.train.map(inputOf));
  const valX = stackRows(split.val.map(inputOf));
  const trainY = tf.tensor1d(trainLabels, 'int32');
  const variables = createVariables(
    initialParams,
    split.trainIdentities.length,
    settings.seed,
    init === 'appearance-identity'
      ? classMeanClassifier(initialParams, split.train.map(inputOf), trainLabels, classOf.size)
      : undefined,
  );
  const optimiser = createOptimiser(variables, settings);

  try {
    // Reference figures: appearance alone and the untrained network.
    const appearance = valX.slice([0, 0], [-1, cache.appearanceDim]) as tf.Tensor2D;
    const appearanceOnly = evaluate(appearance, valItems, true);
    const initial = evaluate(embed(variables, valX), valItems, true);
    logger.info('fusion training: before training', { appearanceOnly, initial });

    // Epochs.
    const sampler = createPKSampler(trainLabels, {
      p: settings.p,
      k: settings.k,
      seed: settings.seed,
    });
    const totalSteps = settings.epochs * sampler.batchesPerEpoch;
    const history: EpochRecord[] = [];
    let best = { epoch: 0, ...initial };
    let bestParams = initialParams;
    let stoppedEarly = false;
    let seconds = 0;

    for (let epoch = 1; epoch <= settings.epochs; epoch++) {
      const started = performance.now();
      const sums = { triplet: 0, ce: 0, total: 0, margin: 0 };
      let lr = settings.lr;
      const batches = sampler.epoch();

      for (const batch of batches) {
        lr = learningRate(settings, optimiser.steps, totalSteps, epoch - 1);
        const losses = trainStep(variables, optimiser, trainX, trainY, batch, lr, settings);
        if (!Number.isFinite(losses.total)) {
          throw new ReidbError(
            'invalid_argument',
            `fusion training diverged at epoch ${epoch} (loss ${losses.total}); lower lr`,
            { input: 'lr', details: { epoch, lr } },
          );
        }
        sums.triplet += losses.triplet;
        sums.ce += losses.ce;
        sums.total += losses.total;
        sums.margin += losses.margin;
      }

      // Validation and bookkeeping.
      const val = evaluate(embed(variables, valX), valItems, true);
      const epochSeconds = (performance.now() - started) / 1000;
      seconds += epochSeconds;
      const n = batches.length;
      const record: EpochRecord = {
        epoch,
        triplet: sums.triplet / n,
        ce: sums.ce / n,
        total: sums.total / n,
        margin: sums.margin / n,
        ...val,
        lr,
        seconds: epochSeconds,
        secondsLeft: (seconds / epoch) * (settings.epochs - epoch),
      };
      history.push(record);
      if (val.valMAP > best.valMAP) {
        best = { epoch, ...val };
        bestParams = readParams(variables, initialParams);
      }
      logger.info('fusion training: epoch', { ...record });
      const { epoch: _, ...progress } = record;
      options.onProgress?.(epoch, progress);

      if (epoch - best.epoch >= settings.patience) {
        stoppedEarly = epoch < settings.epochs;
        break;
      }
    }

    const header = makeHeader(cache, split, settings, {
      data: options.data ?? [],
      outputDim: initialParams.fc3.outputs,
      epochs: history.length,
      best,
      appearanceOnly,
    });
    const secondsPerEpoch = history.length === 0 ? 0 : seconds / history.length;
    return {
      params: bestParams,
      header,
      history,
      best,
      initial,
      appearanceOnly,
      split,
      stoppedEarly,
      secondsPerEpoch,
    };
  } finally {
    optimiser.dispose();
    for (const v of allVariables(variables)) v.variable.dispose();
    tf.dispose([trainX, valX, trainY]);
  }
}

/** Options with defaults applied and checked. */
interface Settings {
  valShare: number;
  epochs: number;
  p: number;
  k: number;
  optimiser: 'adamw' | 'sgd';
  lr: number;
  weightDecay: number;
  momentum: number;
  lossWeights: LossWeights;
  margin: 'adaptive' | number;
  seed: number;
  patience: number;
  backend: TfBackend;
}

function resolveOptions(options: TrainOptions): Settings {
  const optimiser = options.optimiser ?? 'adamw';
  if (optimiser !== 'adamw' && optimiser !== 'sgd') {
    throw invalid(`optimiser must be 'adamw' or 'sgd', got ${optimiser}`, 'optimiser');
  }
  const settings: Settings = {
    valShare: options.valShare ?? 0.2,
    epochs: options.epochs ?? 60,
    p: options.p ?? 16,
    k: options.k ?? 8,
    optimiser,
    lr: options.lr ?? (optimiser === 'adamw' ? 3e-4 : 0.1),
    weightDecay: options.weightDecay ?? (optimiser === 'adamw' ? 0.05 : 5e-4),
    momentum: options.momentum ?? 0.9,
    lossWeights: options.lossWeights ?? { ...DEFAULT_LOSS_WEIGHTS },
    margin: options.margin ?? 'adaptive',
    seed: options.seed ?? 1,
    patience: options.patience ?? 10,
    backend: options.backend ?? 'wasm',
  };

  if (!(settings.valShare > 0 && settings.valShare < 1)) {
    throw invalid(`valShare must be in (0, 1), got ${settings.valShare}`, 'valShare');
  }
  for (const name of ['epochs', 'p', 'k', 'patience'] as const) {
    const value = settings[name];
    if (!Number.isInteger(value) || value < 1) {
      throw invalid(`${name} must be a positive integer, got ${value}`, name);
    }
  }
  if (!Number.isInteger(settings.seed) || settings.seed < 0 || settings.seed >= 2 ** 32) {
    throw invalid(`seed must be an integer in [0, 2^32), got ${settings.seed}`, 'seed');
  }
  if (!(settings.lr > 0 && Number.isFinite(settings.lr))) {
    throw invalid(`lr must be a positive number, got ${settings.lr}`, 'lr');
  }
  if (settings.backend !== 'cpu' && settings.backend !== 'wasm') {
    throw invalid(`backend must be 'cpu' or 'wasm', got ${settings.backend}`, 'backend');
  }
  checkLossWeights(settings.lossWeights);
  return settings;
}

function invalid(message: string, input?: string): ReidbError {
  return new ReidbError('invalid_argument', message, { input });
}

/** The cache can be trained on: dims known, >= 2 training identities, a scorable val face. */
function checkSplit(cache: FeatureCache, split: IdentitySplit): void {
  if (cache.alignMode !== 'mesh' && cache.alignMode !== 'raw') {
    throw invalid(`cache alignMode must be 'mesh' or 'raw', got ${cache.alignMode}`, 'alignMode');
  }
  if (split.trainIdentities.length < 2) {
    const got = split.trainIdentities.length;
    const message = `fusion training needs >= 2 identities with >= 2 faces each, got ${got}`;
    throw new ReidbError('invalid_argument', message, { input: 'cache' });
  }
  const valCounts = new Map<string, number>();
  for (const i of split.val) {
    const identity = cache.faces[i].identity;
    valCounts.set(identity, (valCounts.get(identity) ?? 0) + 1);
  }
  if (![...valCounts.values()].some((count) => count >= 2)) {
    throw invalid('no validation identity has 2 faces: nothing to validate on', 'valShare');
  }
}

/** Mean and (population) std of each geometric feature over the given faces. */
function geometryStatsOf(cache: FeatureCache, indices: number[]): GeometryStats {
  const dim = cache.geometryDim;
  const sum = new Float64Array(dim);
  const squares = new Float64Array(dim);
  for (const i of indices) {
    const g = cache.faces[i].geometry;
    for (let j = 0; j < dim; j++) {
      sum[j] += g[j];
      squares[j] += g[j] * g[j];
    }
  }
  const n = Math.max(indices.length, 1);
  const mean = Float32Array.from(sum, (s) => s / n);
  const std = Float32Array.from(squares, (s, j) => Math.sqrt(Math.max(s / n - mean[j] ** 2, 0)));
  return { mean, std };
}

/** Rows as one [rows, dim] float32 tensor. */
function stackRows(rows: Float32Array[]): tf.Tensor2D {
  const dim = rows[0]?.length ?? 0;
  const data = new Float32Array(rows.length * dim);
  rows.forEach((row, r) => data.set(row, r * dim));
  return tf.tensor2d(data, [rows.length, dim]);
}

/** Scale of the class-mean classifier's logits (a cosine-softmax scale). */
const CLASS_MEAN_SCALE = 30;

/**
 * A starting classifier W_c [outputs, classes] that agrees with the starting network: column
 * c is the centred, L2-normalised mean of class c's initial embeddings, times
 * CLASS_MEAN_SCALE. Started from random columns instead, the cross-entropy's first gradients
 * (loss near log(classes)) pull an appearance-identity network away from its good start: val
 * mAP fell from 0.95 to 0.85 in the first epoch on the real caches.
 */
function classMeanClassifier(
  params: GatedFusionParams,
  inputs: Float32Array[],
  labels: number[],
  classes: number,
): Float32Array {
  const dim = params.fc3.outputs;
  const sums = new Float64Array(classes * dim);
  const global = new Float64Array(dim);
  inputs.forEach((x, i) => {
    const h = forwardGatedFusion(params, x);
    for (let d = 0; d < dim; d++) {
      sums[labels[i] * dim + d] += h[d];
      global[d] += h[d] / inputs.length;
    }
  });

  const counts = new Float64Array(classes);
  for (const c of labels) counts[c]++;
  const weight = new Float32Array(dim * classes);
  for (let c = 0; c < classes; c++) {
    const centred = Array.from(
      { length: dim },
      (_, d) => sums[c * dim + d] / counts[c] - global[d],
    );
    const norm = Math.hypot(...centred) || 1;
    for (let d = 0; d < dim; d++) weight[d * classes + c] = (CLASS_MEAN_SCALE * centred[d]) / norm;
  }
  return weight;
}

/**
 * Trainable variables from the initial parameters, plus the classifier: `classifierWeight`
 * when given, else Glorot-uniform.
 */
function createVariables(
  params: GatedFusionParams,
  classes: number,
  seed: number,
  classifierWeight?: Float32Array,
): NetworkVariables {
  // tidy frees the initial-value tensors; the variables, never tracked by tidy, stay.
  const variable = (make: () => tf.Tensor) => tf.tidy(() => tf.variable(make(), true));
  const toVariables = (layer: DenseLayer) => ({
    weight: variable(() => tf.tensor2d(layer.weight, [layer.inputs, layer.outputs])),
    bias: variable(() => tf.tensor1d(layer.bias)),
  });
  const layers = Object.fromEntries(
    LAYERS.map((name) => [name, toVariables(params[name])]),
  ) as NetworkVariables['layers'];

  // The classifier W_c: [outputs, classes], its own generator derived from the seed.
  const outputs = params.fc3.outputs;
  const random = mulberry32((seed ^ 0x5bd1e995) >>> 0);
  const limit = Math.sqrt(6 / (outputs + classes));
  const weight =
    classifierWeight ??
    Float32Array.from({ length: outputs * classes }, () => (2 * random() - 1) * limit);
  const classifier = {
    weight: variable(() => tf.tensor2d(weight, [outputs, classes])),
    bias: variable(() => tf.zeros([classes])),
  };
  return { layers, classifier };
}

function allVariables(variables: NetworkVariables): OptimisedVariable[] {
  const out: OptimisedVariable[] = [];
  for (const layer of [...LAYERS.map((name) => variables.layers[name]), variables.classifier]) {
    out.push({ variable: layer.weight, decay: true }, { variable: layer.bias, decay: false });
  }
  return out;
}

function createOptimiser(variables: NetworkVariables, settings: Settings): Optimiser {
  const list = allVariables(variables);
  if (settings.optimiser === 'sgd') {
    return createSgd(list, { momentum: settings.momentum, weightDecay: settings.weightDecay });
  }
  return createAdamW(list, { weightDecay: settings.weightDecay });
}

/**
 * The learning rate of the next step: AdamW anneals by cosine over all steps to 0; SGD divides
 * by 10 at 40 % and 80 % of the epochs (METHOD.md's epochs 40 and 80 of 100, scaled).
 */
function learningRate(settings: Settings, step: number, totalSteps: number, epoch: number): number {
  if (settings.optimiser === 'adamw') return cosineAnnealing(settings.lr, step, totalSteps);
  const milestones = [Math.round(0.4 * settings.epochs), Math.round(0.8 * settings.epochs)];
  return stepDecay(settings.lr, epoch, milestones);
}

/**
 * The network on x [n, D] (gated-fusion.ts's forward): FC3's output h [n, outputs] before the
 * L2 normalisation, which callers apply (the embedding is l2NormalizeRows(h)).
 */
function forwardRaw(variables: NetworkVariables, x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const dense = (name: LayerName, input: tf.Tensor2D) => {
      const { weight, bias } = variables.layers[name];
      return tf.add(tf.matMul(input, weight), bias) as tf.Tensor2D;
    };
    const gated = tf.mul(tf.sigmoid(dense('gate', x)), x) as tf.Tensor2D;
    const h1 = tf.relu(dense('fc1', gated));
    const h2 = tf.relu(dense('fc2', h1));
    return dense('fc3', h2);
  });
}

/** Unit-length embeddings [n, outputs], without gradient, for validation. */
function embed(variables: NetworkVariables, x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => l2NormalizeRows(forwardRaw(variables, x)));
}

/**
 * The trainer's own tfjs forward pass on given parameters: the embeddings the validation mAP
 * is computed from. Exported so that tests can hold it against the served forward passes
 * (TypeScript and ONNX). Initialises `backend` (default 'wasm') for this thread.
 */
export async function embedWithTrainer(
  params: GatedFusionParams,
  inputs: Float32Array[],
  backend: TfBackend = 'wasm',
): Promise<Float32Array[]> {
  await initTf(backend);
  const variables = createVariables(params, 1, 0);
  const x = stackRows(inputs);
  const out = embed(variables, x);
  try {
    const data = out.dataSync() as Float32Array;
    const dim = params.fc3.outputs;
    return inputs.map((_, i) => data.slice(i * dim, (i + 1) * dim));
  } finally {
    x.dispose();
    out.dispose();
    for (const v of allVariables(variables)) v.variable.dispose();
  }
}

/** One optimiser step on one batch; returns the batch's losses. */
function trainStep(
  variables: NetworkVariables,
  optimiser: Optimiser,
  trainX: tf.Tensor2D,
  trainY: tf.Tensor1D,
  batch: number[],
  lr: number,
  settings: Settings,
): { triplet: number; ce: number; total: number; margin: number } {
  const parts: tf.Tensor[] = [];
  const indices = tf.tensor1d(batch, 'int32');
  const x = tf.gather(trainX, indices) as tf.Tensor2D;
  const y = tf.gather(trainY, indices) as tf.Tensor1D;
  const trained = allVariables(variables).map((v) => v.variable);

  try {
    const { value, grads } = tf.variableGrads(() => {
      // Triplet on the embedding's direction; CE on FC3's output before normalisation, whose
      // norm gives the logits their scale (on the unit sphere they would stay within +-|W_c|).
      const h = forwardRaw(variables, x);
      const { weight, bias } = variables.classifier;
      const logits = tf.add(tf.matMul(h, weight), bias) as tf.Tensor2D;
      const loss = fusionLoss(h, logits, y, settings.lossWeights, { margin: settings.margin });
      parts.push(tf.keep(loss.triplet), tf.keep(loss.ce), tf.keep(loss.margin));
      return loss.total;
    }, trained);
    optimiser.step(grads, lr);

    const [triplet, ce, margin] = parts.map((t) => t.dataSync()[0]);
    const total = value.dataSync()[0];
    tf.dispose([value, ...Object.values(grads)]);
    return { triplet, ce, total, margin };
  } finally {
    tf.dispose([indices, x, y, ...parts]);
  }
}

/**
 * Leave-one-out mAP and Rank-1 of embeddings [n, dim] (normalised here) by cosine similarity:
 * each face is a query against all the others. Disposes `embeddings` when `consume` is set.
 */
function evaluate(embeddings: tf.Tensor2D, items: EvalItem[], consume = false): ValFigures {
  const similarity = tf.tidy(() => {
    const unit = l2NormalizeRows(embeddings);
    return tf.matMul(unit, unit, false, true);
  });
  const rows = similarity.arraySync() as number[][];
  similarity.dispose();
  if (consume) embeddings.dispose();

  const result = cmcAndMap(items, items, rows, {
    excludeSameCamera: false,
    ranks: [1],
    excludeSelf: items.map((_, i) => i),
  });
  return { valMAP: result.mAP, valRank1: result.cmc[1] };
}

/** The network's current weights as parameters (statistics copied from `base`). */
function readParams(variables: NetworkVariables, base: GatedFusionParams): GatedFusionParams {
  const read = (name: LayerName): DenseLayer => ({
    inputs: base[name].inputs,
    outputs: base[name].outputs,
    weight: Float32Array.from(variables.layers[name].weight.dataSync() as Float32Array),
    bias: Float32Array.from(variables.layers[name].bias.dataSync() as Float32Array),
  });
  return {
    appearanceDim: base.appearanceDim,
    geometryDim: base.geometryDim,
    geometryMean: base.geometryMean.slice(),
    geometryStd: base.geometryStd.slice(),
    gate: read('gate'),
    fc1: read('fc1'),
    fc2: read('fc2'),
    fc3: read('fc3'),
  };
}

function makeHeader(
  cache: FeatureCache,
  split: IdentitySplit,
  settings: Settings,
  run: {
    data: string[];
    outputDim: number;
    epochs: number;
    best: { epoch: number; valMAP: number; valRank1: number };
    appearanceOnly: ValFigures;
  },
): Omit<FusionModelHeader, 'id' | 'weightsSha256'> {
  const { best, appearanceOnly } = run;
  const inputDim = cache.appearanceDim + cache.geometryDim;
  return {
    format: 'reidb-gated-fusion',
    version: 1,
    embedderId: cache.embedderId,
    alignMode: cache.alignMode as 'mesh' | 'raw',
    appearanceDim: cache.appearanceDim,
    geometryDim: cache.geometryDim,
    inputDim,
    outputDim: run.outputDim,
    createdAt: new Date().toISOString(),
    training: {
      data: [...run.data],
      trainIdentities: split.trainIdentities.length,
      valIdentities: split.valIdentities.length,
      trainFaces: split.train.length,
      valFaces: split.val.length,
      epochs: run.epochs,
      loss: { ...settings.lossWeights },
      optimiser: settings.optimiser,
      seed: settings.seed,
    },
    metrics: {
      valMAP: best.valMAP,
      valRank1: best.valRank1,
      bestEpoch: best.epoch,
      appearanceValMAP: appearanceOnly.valMAP,
      appearanceValRank1: appearanceOnly.valRank1,
    },
  };
}
