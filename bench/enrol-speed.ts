/**
 * Enrolment speed of the whole engine: decode, detect, mesh, align, embed, fuse on worker
 * threads, then the gallery write, for real photos in a folder layout.
 *
 *   npx tsx bench/enrol-speed.ts [--root ../shared/data/lfw_multi] [--limit 600] [--workers N]
 *                                [--export FILE.json]
 *
 * Enrols the first --limit images (folder layout ROOT/<identity>/<image>, sorted) into a fresh
 * temporary gallery in one batch, as `reidb enroll --layout folder` does, after a warm-up of
 * 8 images that are not counted. Prints one JSON document on stdout: enrolled images per
 * second over the whole batch (wall clock), per-image processing time p50/p95 (ms, the sum
 * of the stages on a worker, queueing excluded), and the median milliseconds of each stage. --export writes the fused vectors
 * as a JSON array of float arrays (real embeddings for bench/search-speed.ts --real).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { createEngine } from '../src/engine/pool.ts';
import { enrolImages, listFolderLayout } from '../src/engine/service.ts';
import { openGallery } from '../src/gallery/gallery.ts';

const { values: args } = parseArgs({
  options: {
    root: { type: 'string', default: '../shared/data/lfw_multi' },
    limit: { type: 'string', default: '600' },
    workers: { type: 'string' },
    export: { type: 'string' },
  },
});

const percentile = (values: number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};

const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-enrol-speed-'));
const engine = await createEngine({ workers: args.workers ? Number(args.workers) : undefined });
const gallery = await openGallery(path.join(dir, 'gallery'));

try {
  const { items } = listFolderLayout(path.resolve(args.root!));
  const warmup = items.slice(0, 8);
  const batch = items.slice(8, 8 + Number(args.limit));
  await Promise.all(warmup.map((i) => engine.analyseFile((i.image as { file: string }).file)));

  const stageMs: Record<string, number[]> = {};
  const latency: number[] = [];
  const fused: Float32Array[] = [];
  const timed = {
    ...engine,
    analyseFile: async (file: string) => {
      const result = await engine.analyseFile(file);
      const stages = Object.values(result.analysis.stageMs).reduce((a, b) => a + b, 0);
      latency.push(result.decodeMs + stages);
      if (result.analysis.faces[0]) fused.push(result.analysis.faces[0].fused);
      for (const [stage, ms] of Object.entries({
        decode: result.decodeMs,
        ...result.analysis.stageMs,
      })) {
        (stageMs[stage] ??= []).push(ms);
      }
      return result;
    },
  };

  const start = performance.now();
  const report = await enrolImages(timed, gallery, batch);
  const seconds = (performance.now() - start) / 1000;

  if (args.export) writeFileSync(args.export, JSON.stringify(fused.map((v) => Array.from(v))));

  const medians = Object.fromEntries(
    Object.entries(stageMs).map(([stage, ms]) => [stage, Number(percentile(ms, 50).toFixed(2))]),
  );
  const result = {
    root: args.root,
    images: batch.length,
    enrolled: report.enrolled.length,
    skipped: report.skipped.length,
    workers: engine.workers,
    seconds: Number(seconds.toFixed(2)),
    imagesPerSecond: Number((batch.length / seconds).toFixed(2)),
    processingMs: {
      p50: Number(percentile(latency, 50).toFixed(1)),
      p95: Number(percentile(latency, 95).toFixed(1)),
    },
    stageMsMedian: medians,
    machine: `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, Node ${process.version}`,
  };
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
} finally {
  await engine.close();
  gallery.close();
  rmSync(dir, { recursive: true, force: true });
}
