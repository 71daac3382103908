/**
 * The dlib face-recognition ResNet (dlib_face_recognition_resnet_model_v1) written as a tfjs
 * forward pass over the weights that @vladmandic/face-api ships: a 150 x 150 RGB crop goes in,
 * a 128-D L2-normalised embedding comes out. The layer layout and pixel normalisation follow
 * face-api's port, so the embeddings agree with face-api's own to float precision
 * (test/features/appearance-dlib.test.ts).
 */
import { ReidbError } from '../errors.ts';
import { resolveModel } from '../models/registry.ts';
import { initTf, loadWeightsFromFile, tf, type TfBackend } from '../tf/runtime.ts';
import type { RgbImage } from '../types.ts';
import { checkCrops, normaliseRows, type Embedder } from './appearance.ts';

export const DLIB_MODEL_ID = 'dlib-resnet-v1';

/** Side of the input crop in pixels. */
export const DLIB_INPUT_SIZE = 150;

/** Embedding dimension. */
export const DLIB_DIM = 128;

/** Per-channel mean the network was trained with, in 8-bit RGB units. */
const MEAN_RGB = [122.782, 117.001, 104.298] as const;

export interface DlibEmbedderOptions {
  /** tfjs backend. Default 'wasm'. */
  backend?: TfBackend;
  /** Folder with the weight files. Default: the installed @vladmandic/face-api package. */
  modelDir?: string;
  /**
   * Most crops in one forward pass; longer lists run in several passes. Bounds the memory a
   * call takes (about 1 MB of activations per crop at the widest layer). Default 32.
   */
  maxBatch?: number;
}

/** A convolution whose per-channel scale layer is folded into its filters and bias. */
interface FoldedConv {
  filter: tf.Tensor4D;
  bias: tf.Tensor1D;
}

interface ResidualBlock {
  /** Stride-2 blocks halve the feature map and, where the width grows, zero-pad the shortcut. */
  down: boolean;
  conv1: FoldedConv;
  conv2: FoldedConv;
}

interface DlibParams {
  stem: FoldedConv;
  blocks: ResidualBlock[];
  fc: tf.Tensor2D;
}

/** The residual blocks in order: weight-name prefix, output channels, stride 2 or not. */
const BLOCKS: { name: string; channels: number; down: boolean }[] = [
  { name: 'conv32_1', channels: 32, down: false },
  { name: 'conv32_2', channels: 32, down: false },
  { name: 'conv32_3', channels: 32, down: false },
  { name: 'conv64_down', channels: 64, down: true },
  { name: 'conv64_1', channels: 64, down: false },
  { name: 'conv64_2', channels: 64, down: false },
  { name: 'conv64_3', channels: 64, down: false },
  { name: 'conv128_down', channels: 128, down: true },
  { name: 'conv128_1', channels: 128, down: false },
  { name: 'conv128_2', channels: 128, down: false },
  { name: 'conv256_down', channels: 256, down: true },
  { name: 'conv256_1', channels: 256, down: false },
  { name: 'conv256_2', channels: 256, down: false },
  { name: 'conv256_down_out', channels: 256, down: true },
];

/**
 * Loads the dlib ResNet weights (checked against the model manifest) and returns an Embedder
 * with id 'dlib-resnet-v1', dim 128, inputSize 150. Initialises the tfjs backend named in the
 * options. Throws model_missing / model_corrupt when a weight file is absent or altered and
 * model_mismatch when the weights do not have the layout this network needs.
 */
export async function createDlibEmbedder(options: DlibEmbedderOptions = {}): Promise<Embedder> {
  const backend = options.backend ?? 'wasm';
  const maxBatch = options.maxBatch ?? 32;
  if (!Number.isInteger(maxBatch) || maxBatch < 1) {
    throw new ReidbError(
      'invalid_argument',
      `maxBatch must be a positive integer, got ${maxBatch}`,
      { input: 'maxBatch' },
    );
  }

  const model = resolveModel(DLIB_MODEL_ID, options.modelDir);
  await initTf(backend);

  const weights = loadWeightsFromFile(model.entryPath);
  let params: DlibParams;
  try {
    params = buildParams(weights, model.entryPath);
  } finally {
    // The folded copies are all the network needs; the raw tensors go either way.
    tf.dispose(Object.values(weights));
  }

  let closed = false;

  return {
    id: DLIB_MODEL_ID,
    dim: DLIB_DIM,
    inputSize: DLIB_INPUT_SIZE,

    async embed(crops: RgbImage[]): Promise<Float32Array[]> {
      if (closed) {
        throw new ReidbError('invalid_argument', `embedder ${DLIB_MODEL_ID} is closed`, {
          input: DLIB_MODEL_ID,
        });
      }
      checkCrops(crops, DLIB_INPUT_SIZE, DLIB_MODEL_ID);

      const out: Float32Array[] = [];
      for (let start = 0; start < crops.length; start += maxBatch) {
        const batch = crops.slice(start, start + maxBatch);
        const result = tf.tidy(() => forward(params, toInputTensor(batch)));
        const flat = (await result.data()) as Float32Array;
        result.dispose();
        out.push(...normaliseRows(flat, batch.length, DLIB_DIM));
      }
      return out;
    },

    close(): void {
      if (closed) return;
      closed = true;
      const layers = [params.stem, ...params.blocks.flatMap((b) => [b.conv1, b.conv2])];
      tf.dispose([...layers.flatMap((l) => [l.filter, l.bias]), params.fc]);
    },
  };
}

/**
 * Packs crops into one [n, 150, 150, 3] float32 tensor in the network's units:
 * (pixel - channel mean) / 255.
 */
function toInputTensor(crops: RgbImage[]): tf.Tensor4D {
  const pixels = DLIB_INPUT_SIZE * DLIB_INPUT_SIZE;
  const buffer = new Float32Array(crops.length * pixels * 3);

  let o = 0;
  for (const crop of crops) {
    const d = crop.data;
    for (let p = 0; p < pixels * 3; p += 3) {
      buffer[o++] = (d[p] - MEAN_RGB[0]) / 255;
      buffer[o++] = (d[p + 1] - MEAN_RGB[1]) / 255;
      buffer[o++] = (d[p + 2] - MEAN_RGB[2]) / 255;
    }
  }

  return tf.tensor4d(buffer, [crops.length, DLIB_INPUT_SIZE, DLIB_INPUT_SIZE, 3]);
}

/** The forward pass; returns the [n, 128] embeddings before L2 normalisation. */
function forward(params: DlibParams, input: tf.Tensor4D): tf.Tensor2D {
  // Stem: 7x7 stride-2 convolution (150 -> 72), then 3x3 stride-2 max pooling (72 -> 35).
  let x = conv(input, params.stem, 2, true);
  x = tf.maxPool(x, 3, 2, 'valid');

  // Residual stages: 35 -> 17 -> 8 -> 4 -> 2 pixels, 32 -> 64 -> 128 -> 256 channels.
  for (const block of params.blocks) x = block.down ? residualDown(x, block) : residual(x, block);

  // Global average pooling over the feature map, then the linear 256 -> 128 projection.
  const pooled = tf.mean(x, [1, 2]) as tf.Tensor2D;
  return tf.matMul(pooled, params.fc);
}

/** Convolution + folded scale (+ ReLU). Stride 1 keeps the size ('same'); stride 2 is 'valid'. */
function conv(x: tf.Tensor4D, layer: FoldedConv, stride: 1 | 2, relu: boolean): tf.Tensor4D {
  return tf.fused.conv2d({
    x,
    filter: layer.filter,
    strides: stride,
    pad: stride === 1 ? 'same' : 'valid',
    bias: layer.bias,
    activation: relu ? 'relu' : 'linear',
  });
}

function residual(x: tf.Tensor4D, block: ResidualBlock): tf.Tensor4D {
  const y = conv(conv(x, block.conv1, 1, true), block.conv2, 1, false);
  return tf.relu(tf.add(y, x) as tf.Tensor4D);
}

/**
 * Downsampling block. The shortcut is a 2x2 average pool, zero-padded in channels to the
 * block's width. Where the 3x3 'valid' convolution comes out one pixel smaller than the pool
 * (odd sizes: 8 -> 3 vs 4, 3 -> 1 vs 2), the main path is zero-padded at the bottom and right,
 * as face-api's port does.
 */
function residualDown(x: tf.Tensor4D, block: ResidualBlock): tf.Tensor4D {
  let y = conv(conv(x, block.conv1, 2, true), block.conv2, 1, false);
  let shortcut = tf.avgPool(x, 2, 2, 'valid') as tf.Tensor4D;

  const padRows = shortcut.shape[1] - y.shape[1];
  const padCols = shortcut.shape[2] - y.shape[2];
  if (padRows > 0 || padCols > 0) {
    y = tf.pad(y, [
      [0, 0],
      [0, padRows],
      [0, padCols],
      [0, 0],
    ]);
  }

  const padChannels = y.shape[3] - shortcut.shape[3];
  if (padChannels > 0) {
    shortcut = tf.pad(shortcut, [
      [0, 0],
      [0, 0],
      [0, 0],
      [0, padChannels],
    ]);
  }

  return tf.relu(tf.add(y, shortcut) as tf.Tensor4D);
}

/**
 * Checks the weight map against the layout above and folds each scale layer into its
 * convolution: conv(x, W) + b, then * s + t, equals conv(x, W * s) + (b * s + t).
 */
function buildParams(weights: tf.NamedTensorMap, file: string): DlibParams {
  const made: tf.Tensor[] = [];
  const fold = (prefix: string, kernel: number, inChannels: number, outChannels: number) => {
    const layer = foldedConv(weights, prefix, kernel, inChannels, outChannels, file);
    made.push(layer.filter, layer.bias);
    return layer;
  };

  try {
    const stem = fold('conv32_down', 7, 3, 32);

    let channels = 32;
    const blocks = BLOCKS.map(({ name, channels: out, down }): ResidualBlock => {
      const conv1 = fold(`${name}/conv1`, 3, channels, out);
      const conv2 = fold(`${name}/conv2`, 3, out, out);
      channels = out;
      return { down, conv1, conv2 };
    });

    const fc = expectTensor(weights, 'fc', [channels, DLIB_DIM], file).clone() as tf.Tensor2D;
    return { stem, blocks, fc };
  } catch (error) {
    tf.dispose(made);
    throw error;
  }
}

function foldedConv(
  weights: tf.NamedTensorMap,
  prefix: string,
  kernel: number,
  inChannels: number,
  outChannels: number,
  file: string,
): FoldedConv {
  const filterShape = [kernel, kernel, inChannels, outChannels];
  const filters = expectTensor(weights, `${prefix}/conv/filters`, filterShape, file);
  const bias = expectTensor(weights, `${prefix}/conv/bias`, [outChannels], file);
  const scale = expectTensor(weights, `${prefix}/scale/weights`, [outChannels], file);
  const shift = expectTensor(weights, `${prefix}/scale/biases`, [outChannels], file);

  return tf.tidy(() => ({
    filter: tf.mul(filters, scale) as tf.Tensor4D,
    bias: tf.add(tf.mul(bias, scale), shift) as tf.Tensor1D,
  }));
}

function expectTensor(
  weights: tf.NamedTensorMap,
  name: string,
  shape: number[],
  file: string,
): tf.Tensor {
  const t = weights[name];
  if (t === undefined) {
    throw new ReidbError('model_mismatch', `weights ${file} have no tensor '${name}'`, {
      input: file,
      details: { tensor: name },
    });
  }

  const same = t.shape.length === shape.length && t.shape.every((d, i) => d === shape[i]);
  if (!same) {
    throw new ReidbError(
      'model_mismatch',
      `weights ${file}: tensor '${name}' has shape [${t.shape}], the network needs [${shape}]`,
      { input: file, details: { tensor: name, shape: t.shape, expected: shape } },
    );
  }
  return t;
}
