import path from 'node:path';

import { runBenchmark, type FeatureProvider } from '../bench/run.ts';
import { writeReport } from '../bench/report.ts';
import { createEngine, type Engine } from '../engine/pool.ts';
import { toReidbError } from '../errors.ts';
import { oneOf, required, str, type FlagSpec } from './args.ts';
import type { CommandContext, CommandOutput } from './main.ts';
import { engineOptions } from './options.ts';

export const BENCH_FLAGS: FlagSpec = {
  layout: true,
  pairs: true,
  protocol: true,
  distractors: true,
  out: true,
};

const LAYOUTS = ['folder', 'labels', 'cuhk01', 'cuhk03', 'market1501', 'msmt17'] as const;

/** A FeatureProvider that runs the real face pipeline on the engine's worker threads. */
export function engineProvider(engine: Engine): FeatureProvider {
  return {
    embedderId: `${engine.identity.embedderId}+${engine.identity.fusionId}`,
    async *extract(files: string[]) {
      const jobs = files.map((file) =>
        engine.analyseFile(file).then(
          ({ analysis, decodeMs }) => ({
            file,
            faces: analysis.faces.map((f) => ({
              vector: f.fused,
              yaw: f.pose.yaw,
              pitch: f.pose.pitch,
              roll: f.pose.roll,
              quality: f.quality,
            })),
            stageMs: { decode: decodeMs, ...analysis.stageMs },
          }),
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
    throw toReidbError(new Error('bench needs exactly one dataset ROOT'));
  }
  const options = engineOptions(args, logger);
  const started = performance.now();
  const engine = await createEngine(options);
  try {
    const result = await runBenchmark(
      {
        layout: layout as (typeof LAYOUTS)[number],
        root: path.resolve(args.positionals[0]),
        pairs: resolved(str(args, 'pairs')),
        protocol: oneOf(args, 'protocol', ['loo', 'frontal-gallery'] as const),
        distractors: resolved(str(args, 'distractors')),
        align: options.pipeline?.alignMode ?? 'mesh',
      },
      engineProvider(engine),
      logger,
    );
    const out = str(args, 'out');
    if (out) writeReport(result, out);
    const seconds = (performance.now() - started) / 1000;
    return { json: result, text: benchText(result, seconds, out) };
  } finally {
    await engine.close();
  }
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
  ].join('\n');
}

/** Paths given on the command line are relative to the working directory. */
function resolved(p: string | undefined): string | undefined {
  return p === undefined ? undefined : path.resolve(p);
}
