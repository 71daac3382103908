import { existsSync } from 'node:fs';
import path from 'node:path';

import { createEngine } from '../engine/pool.ts';
import { listFolderLayout } from '../engine/service.ts';
import { writeFusionModel } from '../features/fusion-model-file.ts';
import { exportFusionToOnnx } from '../features/onnx-fusion.ts';
import { ReidbError } from '../errors.ts';
import {
  extractFeatures,
  readFeatureCache,
  writeFeatureCache,
  type FeatureCache,
} from '../train/feature-cache.ts';
import { trainGatedFusion } from '../train/train.ts';
import { int, num, oneOf, required, str, type FlagSpec } from './args.ts';
import type { CommandContext, CommandOutput } from './main.ts';
import { engineOptions } from './options.ts';

export const TRAIN_FLAGS: FlagSpec = {
  layout: true,
  out: true,
  'val-share': true,
  epochs: true,
  cache: true,
  seed: true,
  optimiser: true,
  lr: true,
  'loss-weights': true,
  init: true,
};

/**
 * `reidb train`: extracts (or reads from --cache) the appearance and geometry features of a
 * folder layout, trains the gated fusion on a split by identity, and writes the model file
 * (--out) and its ONNX export (--out + '.onnx'). Progress goes to stderr, one line an epoch.
 */
export async function trainCommand(ctx: CommandContext): Promise<CommandOutput> {
  const { args, logger } = ctx;
  const layout = required(args, 'layout');
  if (layout !== 'folder') {
    throw new ReidbError('invalid_argument', `--layout must be 'folder' for train, got '${layout}'`, {
      input: '--layout',
    });
  }
  if (args.positionals.length !== 1) {
    throw new ReidbError('invalid_argument', 'train needs exactly one ROOT');
  }
  const out = path.resolve(required(args, 'out'));
  const valShare = num(args, 'val-share', 0.01, 0.99) ?? 0.2;
  const epochs = int(args, 'epochs', 1, 10_000) ?? 60;
  const seed = int(args, 'seed', 0, 2 ** 31) ?? 1;
  const optimiser = oneOf(args, 'optimiser', ['adamw', 'sgd'] as const) ?? 'adamw';
  const lr = num(args, 'lr', 1e-7, 10);
  const lossWeights = parseLossWeights(str(args, 'loss-weights'));
  const init = oneOf(args, 'init', ['appearance-identity', 'glorot'] as const);
  const root = path.resolve(args.positionals[0]);

  const cache = await featuresFor(ctx, root, str(args, 'cache'));
  const result = await trainGatedFusion(cache, {
    valShare,
    epochs,
    seed,
    optimiser,
    lr,
    lossWeights,
    init,
    logger,
    data: [root],
    onProgress: (epoch, p) =>
      ctx.stderr(
        `epoch ${epoch}/${epochs}: triplet ${p.triplet.toFixed(4)} ce ${p.ce.toFixed(4)} ` +
          `val mAP ${p.valMAP.toFixed(4)} Rank-1 ${p.valRank1.toFixed(4)} ` +
          `(${p.seconds.toFixed(1)} s, about ${Math.round(p.secondsLeft)} s left)\n`,
      ),
  });

  const header = writeFusionModel(out, result.header, result.params);
  const onnx = `${out}.onnx`;
  exportFusionToOnnx(result.params, onnx, { fusionId: header.id });

  const json = {
    model: out,
    onnx,
    id: header.id,
    epochs: result.history.length,
    bestEpoch: result.best.epoch,
    valMAP: result.best.valMAP,
    valRank1: result.best.valRank1,
    appearanceOnlyValMAP: result.appearanceOnly.valMAP,
    trainIdentities: result.split.trainIdentities.length,
    valIdentities: result.split.valIdentities.length,
    trainFaces: result.split.train.length,
    valFaces: result.split.val.length,
    stoppedEarly: result.stoppedEarly,
    secondsPerEpoch: result.secondsPerEpoch,
  };
  const text =
    `wrote ${out} (${header.id}) and ${onnx}\n` +
    `best epoch ${json.bestEpoch} of ${json.epochs}: val mAP ${json.valMAP.toFixed(4)}, ` +
    `Rank-1 ${json.valRank1.toFixed(4)}; appearance alone on the same ${json.valIdentities} ` +
    `validation identities: mAP ${json.appearanceOnlyValMAP.toFixed(4)}`;
  return { json, text };
}

/** `--loss-weights T,C`: the triplet and cross-entropy weights, each in [0, 1], summing to 1. */
function parseLossWeights(value?: string): { triplet: number; ce: number } | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(',').map((p) => Number(p.trim()));
  const ok = parts.length === 2 && parts.every((p) => Number.isFinite(p) && p >= 0 && p <= 1);
  if (!ok || Math.abs(parts[0] + parts[1] - 1) > 1e-6) {
    throw new ReidbError(
      'invalid_argument',
      `--loss-weights must be two weights in [0, 1] that sum to 1, as 0.7,0.3; got '${value}'`,
      { input: '--loss-weights' },
    );
  }
  return { triplet: parts[0], ce: parts[1] };
}

/** Features from --cache when it exists, else extracted now (and written to --cache if given). */
async function featuresFor(ctx: CommandContext, root: string, cacheFile?: string): Promise<FeatureCache> {
  if (cacheFile && existsSync(cacheFile)) return readFeatureCache(cacheFile);

  const engine = await createEngine(engineOptions(ctx.args, ctx.logger));
  try {
    const { items } = listFolderLayout(root);
    const cache = await extractFeatures(
      engine,
      items.map((i) => ({ file: (i.image as { file: string }).file, identity: i.identity })),
      (done, total) => {
        if (done % 200 === 0 || done === total) ctx.stderr(`features: ${done}/${total} images\n`);
      },
    );
    if (cacheFile) writeFeatureCache(cache, cacheFile);
    return cache;
  } finally {
    await engine.close();
  }
}
