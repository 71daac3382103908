/**
 * Optimisers and learning-rate schedules of the fusion training. tfjs ships Adam but not AdamW
 * (Adam with weight decay decoupled from the gradient), so both optimisers are written here on
 * tf.Variables; state lives in the optimiser object, which the caller disposes.
 */
import { ReidbError } from '../errors.ts';
import { tf } from '../tf/runtime.ts';

/** One trained variable and whether weight decay applies to it (weights yes, biases no). */
export interface OptimisedVariable {
  variable: tf.Variable;
  decay: boolean;
}

export interface Optimiser {
  /** Updates applied so far. */
  readonly steps: number;
  /**
   * One update with the gradients by variable name (as tf.variableGrads returns them) at the
   * learning rate `lr` (the schedule's value for this step). Variables without a gradient are
   * left unchanged. The gradients are not disposed here.
   */
  step(grads: tf.NamedTensorMap, lr: number): void;
  /** Frees the optimiser's state tensors (moments, momentum buffers). */
  dispose(): void;
}

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  /** Decoupled weight decay (default 0.05): each step, p <- p * (1 - lr * weightDecay). */
  weightDecay?: number;
}

/**
 * AdamW (Loshchilov & Hutter's decoupled weight decay, in the order PyTorch applies it): with
 * g the gradient and t the step (from 1),
 *   p <- p * (1 - lr * wd)                   (only variables marked `decay`)
 *   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
 *   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * Defaults b1 0.9, b2 0.999, eps 1e-8, wd 0.05.
 */
export function createAdamW(variables: OptimisedVariable[], options: AdamWOptions = {}): Optimiser {
  const beta1 = options.beta1 ?? 0.9;
  const beta2 = options.beta2 ?? 0.999;
  const epsilon = options.epsilon ?? 1e-8;
  const weightDecay = options.weightDecay ?? 0.05;
  checkNonNegative({ beta1, beta2, epsilon, weightDecay });
  const state = variables.map(({ variable, decay }) => ({
    variable,
    decay,
    m: zeroVariable(variable),
    v: zeroVariable(variable),
  }));
  let steps = 0;

  return {
    get steps() {
      return steps;
    },
    step(grads, lr) {
      steps++;
      const correction1 = 1 - beta1 ** steps;
      const correction2 = 1 - beta2 ** steps;
      for (const s of state) {
        const g = grads[s.variable.name];
        if (!g) continue;
        tf.tidy(() => {
          const decayed = s.decay ? tf.mul(s.variable, 1 - lr * weightDecay) : s.variable;
          s.m.assign(tf.add(tf.mul(s.m, beta1), tf.mul(g, 1 - beta1)));
          s.v.assign(tf.add(tf.mul(s.v, beta2), tf.mul(tf.square(g), 1 - beta2)));
          const mHat = tf.div(s.m, correction1);
          const vHat = tf.div(s.v, correction2);
          const update = tf.div(mHat, tf.add(tf.sqrt(vHat), epsilon));
          s.variable.assign(tf.sub(decayed, tf.mul(update, lr)));
        });
      }
    },
    dispose() {
      for (const s of state) {
        s.m.dispose();
        s.v.dispose();
      }
    },
  };
}

export interface SgdOptions {
  /** Default 0.9. */
  momentum?: number;
  /** L2 weight decay added to the gradient (coupled, as in classic SGD); default 5e-4. */
  weightDecay?: number;
}

/**
 * SGD with momentum (PyTorch's form): g <- g + wd * p (variables marked `decay`);
 * b <- mu b + g (b = g on the first step); p <- p - lr * b.
 */
export function createSgd(variables: OptimisedVariable[], options: SgdOptions = {}): Optimiser {
  const momentum = options.momentum ?? 0.9;
  const weightDecay = options.weightDecay ?? 5e-4;
  checkNonNegative({ momentum, weightDecay });
  const state = variables.map(({ variable, decay }) => ({
    variable,
    decay,
    buffer: zeroVariable(variable),
  }));
  let steps = 0;

  return {
    get steps() {
      return steps;
    },
    step(grads, lr) {
      steps++;
      for (const s of state) {
        const g = grads[s.variable.name];
        if (!g) continue;
        tf.tidy(() => {
          const full = s.decay ? tf.add(g, tf.mul(s.variable, weightDecay)) : g;
          const buffer = steps === 1 ? full : tf.add(tf.mul(s.buffer, momentum), full);
          s.buffer.assign(buffer);
          s.variable.assign(tf.sub(s.variable, tf.mul(buffer, lr)));
        });
      }
    },
    dispose() {
      for (const s of state) s.buffer.dispose();
    },
  };
}

/**
 * Cosine annealing from `lr` at step 0 to `lrMin` at step `totalSteps`:
 * lrMin + (lr - lrMin) * (1 + cos(pi * step / totalSteps)) / 2; steps past the end stay at lrMin.
 */
export function cosineAnnealing(lr: number, step: number, totalSteps: number, lrMin = 0): number {
  const progress = totalSteps <= 0 ? 1 : Math.min(Math.max(step / totalSteps, 0), 1);
  return lrMin + ((lr - lrMin) * (1 + Math.cos(Math.PI * progress))) / 2;
}

/**
 * Step decay: `lr` multiplied by `gamma` once for every milestone epoch (0-based epochs) already
 * reached. METHOD.md's SGD: milestones 40 and 80 of 100 epochs, gamma 0.1.
 */
export function stepDecay(lr: number, epoch: number, milestones: number[], gamma = 0.1): number {
  return lr * gamma ** milestones.filter((m) => epoch >= m).length;
}

/** A non-trainable zero variable shaped like `like` (the zeros tensor itself is freed). */
function zeroVariable(like: tf.Variable): tf.Variable {
  return tf.tidy(() => tf.variable(tf.zerosLike(like), false));
}

function checkNonNegative(values: Record<string, number>): void {
  for (const [name, value] of Object.entries(values)) {
    if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
      throw new ReidbError('invalid_argument', `${name} must be a finite number >= 0`, {
        input: name,
      });
    }
  }
}
