/**
 * Losses of the fusion training (METHOD.md, "Training the fusion"), as tfjs ops so that they
 * are differentiable: L = w_t * L_triplet + w_ce * L_CE, by default 0.7 / 0.3.
 *
 * Distances are cosine distances d = 1 - cos(a, b) in [0, 2] between L2-normalised embeddings.
 * Callers run these inside tf.tidy / tf.variableGrads; nothing here keeps tensors.
 */
import { ReidbError } from '../errors.ts';
import { tf } from '../tf/runtime.ts';

/** Keeps a norm from reaching 0 when normalising (an all-zero embedding stays all-zero). */
const NORM_EPSILON = 1e-12;

/** Rows scaled to unit L2 norm. */
export function l2NormalizeRows(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const norm = tf.sqrt(tf.maximum(tf.sum(tf.square(x), 1, true), NORM_EPSILON));
    return tf.div(x, norm) as tf.Tensor2D;
  });
}

/**
 * Pairwise cosine distances [B, B] of the rows of `embeddings` [B, dim]: 1 - cos, in [0, 2].
 * Rows are L2-normalised here, so unnormalised input is accepted.
 */
export function cosineDistanceMatrix(embeddings: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const unit = l2NormalizeRows(embeddings);
    return tf.sub(1, tf.matMul(unit, unit, false, true)) as tf.Tensor2D;
  });
}

/**
 * The identity on values with a zero gradient: what the margin needs to be "computed without
 * gradient" (tfjs has no stopGradient op).
 */
export const stopGradient = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor;
  return { value: tf.clone(x), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
}) as <T extends tf.Tensor>(x: T) => T;

export interface TripletOptions {
  /**
   * 'adaptive' (default): alpha = max(0, mean over the batch's anchors of d(a, n) - d(a, p)),
   * without gradient (METHOD.md's margin, clamped at 0; see batchHardTripletLoss). A number:
   * that fixed margin, for ablations.
   */
  margin?: 'adaptive' | number;
}

export interface TripletLoss {
  /** Scalar loss: mean over valid anchors of relu(d(a, p) - d(a, n) + alpha). */
  loss: tf.Scalar;
  /** The margin alpha used (a constant: no gradient flows through it). */
  margin: tf.Scalar;
  /** Anchors with at least one positive and one negative in the batch (others add nothing). */
  validAnchors: tf.Scalar;
}

/**
 * Batch-hard triplet loss with cosine distance. For each anchor a in the batch, the hardest
 * positive p (same label, not a itself, largest d) and the hardest negative n (other label,
 * smallest d); loss = mean over anchors of relu(d(a, p) - d(a, n) + alpha).
 *
 * Adaptive margin: alpha = mean over the batch of (d(a, n) - d(a, p)), the batch's average gap,
 * taken as a constant. So a triplet is pushed until its gap reaches the batch's average gap,
 * and even a batch whose triplets are all satisfied keeps a loss from those below the average.
 * When alpha is negative (the hardest negative is on average nearer than the hardest positive,
 * as with a fresh random model) it is CLAMPED AT 0: used as it is, a negative margin would
 * leave every triplet violated by less than the average violation without loss, i.e. switch
 * the loss off for most violated triplets exactly when the model is worst. At 0 the loss is
 * the plain batch-hard loss until the batch separates on average, then METHOD.md's margin.
 *
 * `embeddings` [B, dim] (normalised here), `labels` [B] int32 identity classes.
 */
export function batchHardTripletLoss(
  embeddings: tf.Tensor2D,
  labels: tf.Tensor1D,
  options: TripletOptions = {},
): TripletLoss {
  const margin = options.margin ?? 'adaptive';
  if (margin !== 'adaptive' && !(typeof margin === 'number' && Number.isFinite(margin))) {
    throw new ReidbError('invalid_argument', `margin must be 'adaptive' or a number`, {
      input: 'margin',
    });
  }

  return tf.tidy(() => {
    const size = embeddings.shape[0];
    const distances = cosineDistanceMatrix(embeddings);

    // Masks: same identity without the anchor itself; other identity.
    const same = tf.equal(tf.expandDims(labels, 1), tf.expandDims(labels, 0));
    const notSelf = tf.logicalNot(tf.cast(tf.eye(size), 'bool'));
    const positive = tf.logicalAnd(same, notSelf);
    const negative = tf.logicalNot(same);

    // Hardest positive (max d) and hardest negative (min d); a masked entry can never win.
    const low = tf.fill([size, size], -4);
    const high = tf.fill([size, size], 4);
    const hardestPositive = tf.max(tf.where(positive, distances, low), 1);
    const hardestNegative = tf.min(tf.where(negative, distances, high), 1);
    const valid = tf.cast(tf.logicalAnd(tf.any(positive, 1), tf.any(negative, 1)), 'float32');
    const count = tf.maximum(tf.sum(valid), 1);

    // Margin: the batch's mean gap, a constant, clamped at 0 (or the fixed margin).
    const gap = tf.sub(hardestNegative, hardestPositive);
    const alpha =
      margin === 'adaptive'
        ? stopGradient(tf.maximum(tf.div(tf.sum(tf.mul(gap, valid)), count), 0))
        : tf.scalar(margin);

    const hinge = tf.relu(tf.add(tf.neg(gap), alpha));
    const loss = tf.div(tf.sum(tf.mul(hinge, valid)), count);
    return {
      loss: loss as tf.Scalar,
      margin: alpha as tf.Scalar,
      validAnchors: tf.sum(valid) as tf.Scalar,
    };
  });
}

/**
 * Mean cross-entropy of `logits` [B, classes] against int32 `labels` [B]:
 * mean over rows of -log softmax(logits)[label].
 */
export function crossEntropyLoss(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.tidy(() => {
    const classes = logits.shape[1];
    const oneHot = tf.oneHot(tf.cast(labels, 'int32'), classes);
    const logProbabilities = tf.logSoftmax(logits);
    return tf.neg(tf.mean(tf.sum(tf.mul(oneHot, logProbabilities), 1))) as tf.Scalar;
  });
}

/** Weights of the two loss terms (METHOD.md: 0.7 / 0.3; ablations 0.5 / 0.5, 0.6 / 0.4). */
export interface LossWeights {
  triplet: number;
  ce: number;
}

export const DEFAULT_LOSS_WEIGHTS: Readonly<LossWeights> = Object.freeze({
  triplet: 0.7,
  ce: 0.3,
});

export interface FusionLoss {
  total: tf.Scalar;
  triplet: tf.Scalar;
  ce: tf.Scalar;
  margin: tf.Scalar;
}

/**
 * The training loss on one batch: weights.triplet * batch-hard triplet on the embeddings h
 * [B, dim] + weights.ce * cross-entropy of the classifier logits [B, classes] (computed by the
 * caller from h with its linear classifier W_c). Weights must be finite and >= 0, not both 0.
 */
export function fusionLoss(
  embeddings: tf.Tensor2D,
  logits: tf.Tensor2D,
  labels: tf.Tensor1D,
  weights: LossWeights = DEFAULT_LOSS_WEIGHTS,
  options: TripletOptions = {},
): FusionLoss {
  checkLossWeights(weights);
  return tf.tidy(() => {
    const triplet = batchHardTripletLoss(embeddings, labels, options);
    const ce = crossEntropyLoss(logits, labels);
    const total = tf.add(tf.mul(weights.triplet, triplet.loss), tf.mul(weights.ce, ce));
    return { total: total as tf.Scalar, triplet: triplet.loss, ce, margin: triplet.margin };
  });
}

/** Throws invalid_argument unless both weights are finite, >= 0 and not both 0. */
export function checkLossWeights(weights: LossWeights): void {
  const ok = (w: number) => typeof w === 'number' && Number.isFinite(w) && w >= 0;
  if (!ok(weights.triplet) || !ok(weights.ce) || weights.triplet + weights.ce === 0) {
    const message = `loss weights must be >= 0 and not both 0, got ${JSON.stringify(weights)}`;
    throw new ReidbError('invalid_argument', message, { input: 'lossWeights' });
  }
}
