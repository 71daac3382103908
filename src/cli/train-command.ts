import { existsSync } from 'node:fs';
import path from 'node:path';

import sharp from 'sharp';

import { createEngine, type Engine } from '../engine/pool.ts';
import { listFolderLayout } from '../engine/service.ts';
import { writeFusionModel } from '../features/fusion-model-file.ts';
import { exportFusionToOnnx } from '../features/onnx-fusion.ts';
import { ReidbError, toReidbError } from '../errors.ts';
import { decodeImage } from '../image/decode.ts';
import { randomAugmentation, seededRandom } from '../train/augment.ts';
import { writeContactSheet } from '../train/contact-sheet.ts';
import type { RgbImage } from '../types.ts';
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
  augment: true,
  'contact-sheet': true,
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
    throw new ReidbError(
      'invalid_argument',
      `--layout must be 'folder' for train, got '${layout}'`,
      {
        input: '--layout',
      },
    );
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

  const augment = int(args, 'augment', 0, 20) ?? 0;
  const cache = await featuresFor(ctx, root, str(args, 'cache'), {
    copies: augment,
    seed,
    contactSheet: resolved(str(args, 'contact-sheet')),
  });
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

/** How many augmented copies of each photo to add, and where to show examples. */
interface AugmentPlan {
  copies: number;
  seed: number;
  contactSheet?: string;
}

/**
 * Features from --cache when it exists, else extracted now (and written to --cache if given).
 * With `copies` > 0, each photo is also augmented that many times before the pipeline
 * (src/train/augment.ts: rotation, scale, flip, noise, blur, HSV, mesh-guided occlusion);
 * the copies are tagged `augmented` so that validation uses real photos only.
 */
async function featuresFor(
  ctx: CommandContext,
  root: string,
  cacheFile: string | undefined,
  plan: AugmentPlan,
): Promise<FeatureCache> {
  if (cacheFile && existsSync(cacheFile)) return readFeatureCache(cacheFile);

  const engine = await createEngine(engineOptions(ctx.args, ctx.logger));
  try {
    const { items } = listFolderLayout(root);
    const labelled = items.map((i) => ({
      file: (i.image as { file: string }).file,
      identity: i.identity,
    }));
    const cache = await extractFeatures(engine, labelled, (done, total) => {
      if (done % 200 === 0 || done === total) ctx.stderr(`features: ${done}/${total} images\n`);
    });
    if (plan.copies > 0) await addAugmented(ctx, engine, cache, plan);
    if (cacheFile) writeFeatureCache(cache, cacheFile);
    return cache;
  } finally {
    await engine.close();
  }
}

async function addAugmented(
  ctx: CommandContext,
  engine: Engine,
  cache: FeatureCache,
  plan: AugmentPlan,
): Promise<void> {
  const originals = [...cache.faces];
  const examples: { image: RgbImage; label: string }[] = [];
  let done = 0;

  await Promise.all(
    originals.map(async (face, index) => {
      // One generator per photo, so the copies do not depend on which worker finishes first.
      const random = seededRandom((plan.seed * 100_003 + index) >>> 0);
      const image = await decodeImage(face.file);
      const { analysis } = await engine.analyseFile(face.file);
      const mesh = analysis.faces[0]?.mesh ?? null;
      for (let c = 0; c < plan.copies; c++) {
        const { image: augmented, applied } = randomAugmentation(image, mesh, random);
        if (examples.length < 24)
          examples.push({ image: augmented, label: applied.join(',') || 'none' });
        const png = await sharp(Buffer.from(augmented.data), {
          raw: { width: augmented.width, height: augmented.height, channels: 3 },
        })
          .png()
          .toBuffer();
        const name = `${face.file}#aug${c}`;
        try {
          const result = await engine.analyseBuffer(png, name);
          const best = result.analysis.faces[0];
          if (!best) {
            cache.skipped.push({ file: name, code: 'no_face' });
            continue;
          }
          cache.faces.push({
            file: name,
            identity: face.identity,
            appearance: best.appearance,
            geometry: best.geometry,
            yaw: best.pose.yaw,
            pitch: best.pose.pitch,
            roll: best.pose.roll,
            quality: best.quality,
            tags: { augmented: applied.join('+') || 'none' },
          });
        } catch (e) {
          cache.skipped.push({ file: name, code: toReidbError(e, name).code });
        }
      }
      if (++done % 100 === 0) ctx.stderr(`augmented: ${done}/${originals.length} photos\n`);
    }),
  );
  cache.faces.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  examples.sort((a, b) => (a.label < b.label ? -1 : 1));
  if (plan.contactSheet) await writeContactSheet(examples, plan.contactSheet, { columns: 6 });
}

function resolved(p: string | undefined): string | undefined {
  return p === undefined ? undefined : path.resolve(p);
}
