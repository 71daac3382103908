import { readFileSync } from 'node:fs';
import path from 'node:path';

import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';

import { ReidbError } from '../errors.ts';
import { packageRoot } from '../models/registry.ts';

export type TfBackend = 'wasm' | 'cpu';

export { tf };

/**
 * Selects and initialises a tfjs backend for this thread. tfjs keeps one global engine per
 * thread, so this is the single place that touches it; every model stage calls it with the
 * backend from its options. Asking for a backend that cannot start is an error, never a
 * silent fall-back to another one.
 */
export async function initTf(backend: TfBackend): Promise<void> {
  // tfjs's engine is one global per thread, so the initialisation in flight is tracked beside it:
  // a second caller must wait for the first one's setBackend instead of seeing the name early.
  const pending = initialising.get(backend);
  if (pending) return pending;
  if (tf.getBackend() === backend) return tf.ready();

  const start = (async () => {
    if (backend === 'wasm') {
      setWasmPaths(path.join(packageRoot('@tensorflow/tfjs-backend-wasm'), 'dist') + path.sep);
    }
    const ok = await tf.setBackend(backend);
    if (!ok) {
      throw new ReidbError('internal', `tfjs backend '${backend}' failed to initialise`, {
        input: backend,
      });
    }
    await tf.ready();
  })();
  initialising.set(backend, start);
  try {
    await start;
  } finally {
    initialising.delete(backend);
  }
}

const initialising = new Map<TfBackend, Promise<void>>();

/**
 * Loads a tfjs graph model (model.json + weight shards) from local files without fetch.
 * Throws model_corrupt naming the file when it cannot be parsed.
 */
export async function loadGraphModelFromFile(jsonPath: string): Promise<tf.GraphModel> {
  let artifacts: tf.io.ModelArtifacts;
  try {
    const json = JSON.parse(readFileSync(jsonPath, 'utf8'));
    const dir = path.dirname(jsonPath);
    const specs: tf.io.WeightsManifestEntry[] = [];
    const buffers: Buffer[] = [];
    for (const group of json.weightsManifest as tf.io.WeightsManifestConfig) {
      specs.push(...group.weights);
      for (const p of group.paths) buffers.push(readFileSync(path.join(dir, p)));
    }
    const weightData = concatBuffers(buffers);
    artifacts = {
      modelTopology: json.modelTopology,
      format: json.format,
      generatedBy: json.generatedBy,
      convertedBy: json.convertedBy,
      userDefinedMetadata: json.userDefinedMetadata,
      signature: json.signature,
      weightSpecs: specs,
      weightData,
    };
  } catch (cause) {
    throw new ReidbError('model_corrupt', `cannot read graph model ${jsonPath}: ${String(cause)}`, {
      input: jsonPath,
      cause,
    });
  }

  try {
    return await tf.loadGraphModel(tf.io.fromMemory(artifacts));
  } catch (cause) {
    throw new ReidbError('model_corrupt', `cannot load graph model ${jsonPath}: ${String(cause)}`, {
      input: jsonPath,
      cause,
    });
  }
}

/**
 * Reads a tfjs weights manifest (layers-free weights, as face-api ships them) into named
 * tensors. The caller owns the tensors and must dispose them.
 */
export function loadWeightsFromFile(manifestPath: string): tf.NamedTensorMap {
  try {
    const groups = JSON.parse(readFileSync(manifestPath, 'utf8')) as tf.io.WeightsManifestConfig;
    const dir = path.dirname(manifestPath);
    const out: tf.NamedTensorMap = {};
    for (const group of groups) {
      const data = concatBuffers(group.paths.map((p) => readFileSync(path.join(dir, p))));
      Object.assign(out, tf.io.decodeWeights(data, group.weights));
    }
    return out;
  } catch (cause) {
    throw new ReidbError('model_corrupt', `cannot read weights ${manifestPath}: ${String(cause)}`, {
      input: manifestPath,
      cause,
    });
  }
}

function concatBuffers(buffers: Buffer[]): ArrayBuffer {
  const total = buffers.reduce((n, b) => n + b.byteLength, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const b of buffers) {
    out.set(b, offset);
    offset += b.byteLength;
  }
  return out.buffer;
}
