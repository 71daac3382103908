import path from 'node:path';

import sharp from 'sharp';

import {
  runBenchmark,
  type BenchmarkOptions,
  type BenchmarkResult,
  type FeatureProvider,
} from '../bench/run.ts';
import { writeReport } from '../bench/report.ts';
import type { Analysis } from '../engine/pipeline.ts';
import { createEngine, type Engine, type EngineOptions } from '../engine/pool.ts';
import { yawBin } from '../bench/metrics.ts';
import { ReidbError, toReidbError } from '../errors.ts';
import { decodeImage } from '../image/decode.ts';
import { seededRandom, syntheticOcclusionLevels } from '../train/augment.ts';
import type { Box } from '../types.ts';
import { readFusionModel } from '../features/fusion-model-file.ts';
import { createConcatFusion, referenceGeometryStats } from '../features/fusion.ts';
import { buildFusionInput, createGatedFusion, meanGate } from '../features/gated-fusion.ts';
import { oneOf, required, str, type FlagSpec } from './args.ts';
import type { CommandContext, CommandOutput } from './main.ts';
import { engineOptions } from './options.ts';

export const BENCH_FLAGS: FlagSpec = {
  ablation: false,
  'occlusion-levels': true,
  layout: true,
  pairs: true,
  protocol: true,
  distractors: true,
  out: true,
};

const LAYOUTS = ['folder', 'labels', 'cuhk01', 'cuhk03', 'market1501', 'msmt17'] as const;

/** A face's features as the ablation re-fuses them. */
interface RecordedFace {
  /** Detection box in pixels. */
  box: Box;
  appearance: Float32Array;
  geometry: Float32Array;
  yaw: number;
  pitch: number;
  roll: number;
  quality: number;
}

/** The part of an analysis the ablation keeps for each face. */
function recordedFaces(analysis: Analysis): RecordedFace[] {
  return analysis.faces.map((f) => ({
    box: f.detection.box,
    appearance: f.appearance,
    geometry: f.geometry,
    yaw: f.pose.yaw,
    pitch: f.pose.pitch,
    roll: f.pose.roll,
    quality: f.quality,
  }));
}

/**
 * A FeatureProvider that runs the real face pipeline on the engine's worker threads;
 * `record`, when given, receives every file's faces (for the ablation's re-fusions).
 */
export function engineProvider(
  engine: Engine,
  record?: Map<string, RecordedFace[]>,
): FeatureProvider {
  return {
    embedderId: `${engine.identity.embedderId}+${engine.identity.fusionId}`,
    async *extract(files: string[]) {
      const jobs = files.map((file) =>
        engine.analyseFile(file).then(
          ({ analysis, decodeMs }) => {
            record?.set(file, recordedFaces(analysis));
            return {
              file,
              faces: analysis.faces.map((f) => ({
                vector: f.fused,
                yaw: f.pose.yaw,
                pitch: f.pose.pitch,
                roll: f.pose.roll,
                quality: f.quality,
              })),
              stageMs: { decode: decodeMs, ...analysis.stageMs },
            };
          },
          (e: unknown) => {
            const err = toReidbError(e, file);
            return { file, faces: [], error: { code: err.code, message: err.message } };
          },
        ),
      );
      for (const job of jobs) yield await job;
    },
  };
}

/** `reidb bench`: runs a benchmark protocol on a dataset and reports CMC, mAP, TAR@FAR. */
export async function benchCommand(ctx: CommandContext): Promise<CommandOutput> {
  const { args, logger } = ctx;
  const layout = oneOf(args, 'layout', LAYOUTS) ?? required(args, 'layout');
  if (args.positionals.length !== 1) {
    throw new ReidbError('invalid_argument', 'bench needs exactly one dataset ROOT');
  }
  const options = engineOptions(args, logger);
  const started = performance.now();
  const bench = (align: 'mesh' | 'raw'): BenchmarkOptions => ({
    layout: layout as (typeof LAYOUTS)[number],
    root: path.resolve(args.positionals[0]),
    pairs: resolved(str(args, 'pairs')),
    protocol: oneOf(args, 'protocol', ['loo', 'frontal-gallery'] as const),
    distractors: resolved(str(args, 'distractors')),
    align,
  });

  const align = options.pipeline?.alignMode ?? 'mesh';
  const recorded = new Map<string, RecordedFace[]>();
  const result = await withEngine(options, (engine) =>
    runBenchmark(
      bench(align),
      engineProvider(engine, args.flags.ablation ? recorded : undefined),
      logger,
    ),
  );
  const json: Record<string, unknown> = { ...result };
  if (args.flags.ablation) {
    json.ablation = await ablation(options, bench, recorded, logger, ctx.stderr);
    const modelFile = options.pipeline?.fusionModel;
    if (modelFile) json.ablationGateByYaw = gateByYaw(modelFile, recorded);
    const levels = parseLevels(str(args, 'occlusion-levels'));
    if (levels.length > 0) {
      json.ablationOcclusion = await occlusionLevels(
        options,
        bench,
        recorded,
        levels,
        logger,
        ctx.stderr,
      );
    }
  }

  const out = str(args, 'out');
  if (out) writeReport(result, out);
  const seconds = (performance.now() - started) / 1000;
  return { json, text: benchText(json, seconds, out) };
}

async function withEngine<T>(
  options: EngineOptions,
  run: (engine: Engine) => Promise<T>,
): Promise<T> {
  const engine = await createEngine(options);
  try {
    return await run(engine);
  } finally {
    await engine.close();
  }
}

/** One row of the ablation table. */
export interface AblationRow {
  name: 'raw' | 'aligned' | 'geometry' | 'concat' | 'gated';
  rank1: number | null;
  mAP: number | null;
  tarAtFar: BenchmarkResult['tarAtFar'];
  auc: number | null;
  perYaw: BenchmarkResult['perYaw'];
  perOcclusion: BenchmarkResult['perOcclusion'];
  /** Mean gate on the appearance and geometry parts of the input (gated row only). */
  meanGate?: { appearance: number; geometry: number };
}

/**
 * The method's ablation on one split: (a) raw box crop, appearance only; (b) mesh-aligned,
 * appearance only; (c) geometry only; (d) the non-learned concat fusion; (e) the learned
 * gated fusion (when --fusion names a model file). Rows b-e re-fuse the features recorded in
 * the main run, so each image goes through the mesh pipeline once and the raw one once.
 */
async function ablation(
  options: EngineOptions,
  bench: (align: 'mesh' | 'raw') => BenchmarkOptions,
  recorded: Map<string, RecordedFace[]>,
  logger: CommandContext['logger'],
  progress: (s: string) => void,
): Promise<AblationRow[]> {
  const rows: AblationRow[] = [];
  const row = (name: AblationRow['name'], r: BenchmarkResult, meanGate?: AblationRow['meanGate']) =>
    rows.push({
      name,
      rank1: r.rank1,
      mAP: r.mAP,
      tarAtFar: r.tarAtFar,
      auc: r.auc,
      perYaw: r.perYaw,
      perOcclusion: r.perOcclusion,
      ...(meanGate ? { meanGate } : {}),
    });

  progress('ablation: raw box crops, appearance only\n');
  const rawOptions: EngineOptions = {
    ...options,
    pipeline: {
      ...options.pipeline,
      alignMode: 'raw',
      fusion: 'appearance',
      fusionModel: undefined,
    },
  };
  row(
    'raw',
    await withEngine(rawOptions, (engine) =>
      runBenchmark(bench('raw'), engineProvider(engine), logger),
    ),
  );

  const stats = referenceGeometryStats();
  const appearanceDim =
    [...recorded.values()].find((f) => f.length > 0)?.[0].appearance.length ?? 128;
  const fusions: [AblationRow['name'], (f: RecordedFace) => Float32Array][] = [
    ['aligned', (f) => unitVector(f.appearance)],
    ['geometry', (f) => unitVector(f.geometry.map((v, i) => (v - stats.mean[i]) / stats.std[i]))],
  ];
  const concat = createConcatFusion({ appearanceDim });
  fusions.push(['concat', (f) => concat.fuse(f.appearance, f.geometry)]);
  for (const [name, fuse] of fusions) {
    progress(`ablation: ${name}\n`);
    row(name, await runBenchmark(bench('mesh'), recordedProvider(recorded, fuse), logger));
  }

  const modelFile = options.pipeline?.fusionModel;
  if (modelFile) {
    progress('ablation: gated\n');
    const model = readFusionModel(modelFile, { appearanceDim });
    const gated = createGatedFusion(model);
    const inputs = [...recorded.values()].flatMap((faces) =>
      faces.slice(0, 1).map((f) => buildFusionInput(model.params, f.appearance, f.geometry)),
    );
    const r = await runBenchmark(
      bench('mesh'),
      recordedProvider(recorded, (f) => gated.fuse(f.appearance, f.geometry)),
      logger,
    );
    row('gated', r, meanGate(model.params, inputs));
  }
  return rows;
}

/** `--occlusion-levels 0.2,0.4,0.6`: shares of the face box in (0, 1). */
function parseLevels(value?: string): number[] {
  if (value === undefined) return [];
  const levels = value.split(',').map((v) => Number(v.trim()));
  if (levels.some((l) => !(l > 0 && l < 1))) {
    throw new ReidbError(
      'invalid_argument',
      `--occlusion-levels must be shares of the face box in (0, 1), as 0.2,0.4; got '${value}'`,
      { input: '--occlusion-levels' },
    );
  }
  return levels;
}

/** The gated fusion's mean gate on appearance and geometry, per mesh-estimated yaw bin. */
function gateByYaw(
  modelFile: string,
  recorded: Map<string, RecordedFace[]>,
): Record<string, { faces: number; appearance: number; geometry: number }> {
  const model = readFusionModel(modelFile);
  const bins = new Map<string, Float32Array[]>();
  for (const faces of recorded.values()) {
    const f = faces[0];
    if (!f) continue;
    const bin = yawBin(f.yaw);
    bins.set(bin, [
      ...(bins.get(bin) ?? []),
      buildFusionInput(model.params, f.appearance, f.geometry),
    ]);
  }
  return Object.fromEntries(
    [...bins].map(([bin, xs]) => [bin, { faces: xs.length, ...meanGate(model.params, xs) }]),
  );
}

/** Rank-1 and mAP of the appearance-based rows with every image occluded at one level. */
export interface OcclusionLevelRow {
  level: number;
  /** Mean measured share of the face box under the patch. */
  coverage: number;
  noFace: number;
  rows: { name: string; rank1: number | null; mAP: number | null }[];
  meanGate?: { appearance: number; geometry: number };
}

/**
 * Synthetic occlusion: every image (probe and gallery alike) gets a noise patch over the given
 * share of its best face's box (nested patches, one seed per file), then goes through the mesh
 * pipeline again; the aligned, concat and gated rows are evaluated on those features. A face
 * the pipeline no longer finds counts as no face, as in the main run.
 */
async function occlusionLevels(
  options: EngineOptions,
  bench: (align: 'mesh' | 'raw') => BenchmarkOptions,
  recorded: Map<string, RecordedFace[]>,
  levels: number[],
  logger: CommandContext['logger'],
  progress: (s: string) => void,
): Promise<OcclusionLevelRow[]> {
  const meshOptions: EngineOptions = {
    ...options,
    pipeline: {
      ...options.pipeline,
      alignMode: 'mesh',
      fusion: 'appearance',
      fusionModel: undefined,
    },
  };
  const modelFile = options.pipeline?.fusionModel;
  const model = modelFile ? readFusionModel(modelFile) : null;
  const out: OcclusionLevelRow[] = [];

  await withEngine(meshOptions, async (engine) => {
    for (const level of levels) {
      progress(`ablation: occlusion level ${level}\n`);
      const occluded = new Map<string, RecordedFace[]>();
      const coverages: number[] = [];
      await Promise.all(
        [...recorded].map(async ([file, faces]) => {
          if (faces.length === 0) return occluded.set(file, []);
          const image = await decodeImage(file);
          const random = seededRandom(hashString(file));
          const [variant] = syntheticOcclusionLevels(image, faces[0].box, random, {
            levels: [level],
          });
          coverages.push(variant.coverage);
          const png = await sharp(Buffer.from(variant.image.data), {
            raw: { width: image.width, height: image.height, channels: 3 },
          })
            .png()
            .toBuffer();
          const { analysis } = await engine.analyseBuffer(png, file);
          occluded.set(file, recordedFaces(analysis));
        }),
      );

      const appearanceDim = faceDim(recorded);
      const concat = createConcatFusion({ appearanceDim });
      const fusions: [string, (f: RecordedFace) => Float32Array][] = [
        ['aligned', (f) => unitVector(f.appearance)],
        ['concat', (f) => concat.fuse(f.appearance, f.geometry)],
      ];
      if (model) {
        const gated = createGatedFusion(model);
        fusions.push(['gated', (f) => gated.fuse(f.appearance, f.geometry)]);
      }
      const rows: OcclusionLevelRow['rows'] = [];
      for (const [name, fuse] of fusions) {
        const r = await runBenchmark(bench('mesh'), recordedProvider(occluded, fuse), logger);
        rows.push({ name, rank1: r.rank1, mAP: r.mAP });
      }
      const firstFaces = [...occluded.values()].flatMap((faces) => faces.slice(0, 1));
      out.push({
        level,
        coverage: coverages.reduce((a, b) => a + b, 0) / Math.max(1, coverages.length),
        noFace: [...occluded.values()].filter((faces) => faces.length === 0).length,
        rows,
        ...(model
          ? {
              meanGate: meanGate(
                model.params,
                firstFaces.map((f) => buildFusionInput(model.params, f.appearance, f.geometry)),
              ),
            }
          : {}),
      });
    }
  });
  return out;
}

function faceDim(recorded: Map<string, RecordedFace[]>): number {
  return [...recorded.values()].find((f) => f.length > 0)?.[0].appearance.length ?? 128;
}

/** FNV-1a of a string: a stable per-file seed. */
function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** A FeatureProvider over features recorded earlier, with another fusion applied. */
function recordedProvider(
  recorded: Map<string, RecordedFace[]>,
  fuse: (face: RecordedFace) => Float32Array,
): FeatureProvider {
  return {
    embedderId: 'recorded',
    async *extract(files: string[]) {
      for (const file of files) {
        const faces = recorded.get(file);
        if (faces === undefined) {
          yield {
            file,
            faces: [],
            error: { code: 'internal', message: `${file}: not in the main run` },
          };
          continue;
        }
        yield {
          file,
          faces: faces.map((f) => ({
            vector: fuse(f),
            yaw: f.yaw,
            pitch: f.pitch,
            roll: f.roll,
            quality: f.quality,
          })),
        };
      }
    },
  };
}

function unitVector(v: Float32Array): Float32Array {
  const n = Math.hypot(...v) || 1;
  return v.map((x) => x / n);
}

function benchText(r: Record<string, any>, seconds: number, out?: string): string {
  const pct = (x: unknown): string =>
    typeof x === 'number' && Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'n/a';
  const tar = r.tarAtFar ?? {};
  return [
    `queries ${r.queries}, gallery ${r.gallery}, no face ${r.noFace?.count ?? r.noFace}`,
    `Rank-1 ${pct(r.rank1)}  Rank-5 ${pct(r.rank5)}  Rank-10 ${pct(r.rank10)}  mAP ${pct(r.mAP)}`,
    r.auc == null
      ? 'no verification pairs'
      : `ROC AUC ${r.auc.toFixed(4)}  TAR@FAR 0.1 ${pct(tar['0.1']?.tar)}  ` +
        `0.01 ${pct(tar['0.01']?.tar)}  0.001 ${pct(tar['0.001']?.tar)}`,
    `${r.imagesPerSecond?.toFixed?.(1) ?? r.imagesPerSecond} images/s; ${seconds.toFixed(0)} s in all` +
      (out ? `; report in ${out}` : ''),
    ...((r.ablation as AblationRow[] | undefined) ?? []).map(
      (a) =>
        `  ablation ${a.name.padEnd(8)} Rank-1 ${pct(a.rank1)}  mAP ${pct(a.mAP)}  ` +
        `TAR@FAR 0.01 ${pct(a.tarAtFar?.['0.01']?.tar)}` +
        (a.meanGate
          ? `  mean gate: appearance ${a.meanGate.appearance.toFixed(3)}, geometry ${a.meanGate.geometry.toFixed(3)}`
          : ''),
    ),
  ].join('\n');
}

/** Paths given on the command line are relative to the working directory. */
function resolved(p: string | undefined): string | undefined {
  return p === undefined ? undefined : path.resolve(p);
}
