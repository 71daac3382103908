/**
 * Shapes shared by the learned gated fusion's training (src/train) and serving
 * (src/features/gated-fusion.ts). METHOD.md step 7, read as h = MLP(sigmoid(W_g x + b_g) * x):
 * the gate re-weights each input feature, then the MLP maps to 128-D, L2-normalised.
 */

/** One dense layer: y = x W + b, with W row-major [inputs, outputs]. */
export interface DenseLayer {
  inputs: number;
  outputs: number;
  /** inputs x outputs values, row-major (W[i][o] at i * outputs + o). */
  weight: Float32Array;
  /** outputs values. */
  bias: Float32Array;
}

/** Everything needed to run a trained gated fusion. */
export interface GatedFusionParams {
  /** Appearance embedding dimension (128 for dlib, 512 for ArcFace). */
  appearanceDim: number;
  /** Geometric descriptor dimension (126). */
  geometryDim: number;
  /** Per-feature mean and std used to z-score the geometry before concatenation. */
  geometryMean: Float32Array;
  geometryStd: Float32Array;
  /** gate: D -> D (sigmoid), fc1: D -> 512 (ReLU), fc2: 512 -> 256 (ReLU), fc3: 256 -> 128. */
  gate: DenseLayer;
  fc1: DenseLayer;
  fc2: DenseLayer;
  fc3: DenseLayer;
}

/** What a model file's header records besides the weights. */
export interface FusionModelHeader {
  format: 'reidb-gated-fusion';
  version: 1;
  /** e.g. 'gated-v1:<first 12 hex of the weights' sha256>'; the gallery records it. */
  id: string;
  embedderId: string;
  alignMode: 'mesh' | 'raw';
  appearanceDim: number;
  geometryDim: number;
  inputDim: number;
  outputDim: number;
  /** sha256 of the weight bytes that follow the header. */
  weightsSha256: string;
  createdAt: string;
  training: {
    data: string[];
    trainIdentities: number;
    valIdentities: number;
    trainFaces: number;
    valFaces: number;
    epochs: number;
    loss: { triplet: number; ce: number };
    optimiser: string;
    seed: number;
  };
  metrics: { valMAP: number; valRank1: number; [name: string]: number };
}
