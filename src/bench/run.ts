/**
 * The benchmark runner: reads a dataset layout, extracts one embedding per image through a
 * FeatureProvider, builds the protocol's query / gallery split, and computes CMC / mAP,
 * verification ROC / TAR@FAR, per-yaw and per-occlusion Rank-1, speed and stage timings.
 *
 * Nothing is hidden: images with no face or a failed extraction are excluded from ranking but
 * counted (`noFace`, `errors`), and `rank1IncludingNoFace` counts faceless queries as misses.
 */
import path from 'node:path';

import { ReidbError } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import { readLayout, readPairs, type DatasetItem, type LayoutKind, type Pair } from './layouts.ts';
import {
  cmcAndMap,
  median,
  rank1ByGroup,
  rocFromPairs,
  tarAtFar,
  yawBin,
  YAW_BINS,
  type EvalItem,
  type PairScore,
  type QueryOutcome,
  type Roc,
  type TarAtFar,
} from './metrics.ts';
import {
  asDistractors,
  buildSplit,
  defaultProtocol,
  type ProtocolKind,
  type YawGetter,
  type YawSource,
} from './protocols.ts';

/** One face the provider found in an image. */
export interface ProvidedFace {
  /** The embedding that is matched (any length; L2-normalised here before use). */
  vector: Float32Array;
  /** Head pose from the mesh, degrees. */
  yaw: number;
  pitch: number;
  roll: number;
  /** Quality in [0, 1]; the runner keeps the face with the highest quality per image. */
  quality: number;
}

/** What the provider reports for one image. */
export interface ProvidedImage {
  file: string;
  faces: ProvidedFace[];
  /** Set when extraction failed (decode error, model error); the image is then excluded. */
  error?: { code: string; message: string };
  /** Milliseconds spent per pipeline stage on this image (decode, detect, mesh, embed, ...). */
  stageMs?: Record<string, number>;
}

/** The seam to the face pipeline: yields one result per requested file, in any order. */
export interface FeatureProvider {
  embedderId: string;
  extract(files: string[]): AsyncIterable<ProvidedImage>;
}

export interface BenchmarkOptions {
  /** Dataset root folder. */
  root: string;
  layout: LayoutKind;
  /** Default: `loo` for folder layouts, `cross-camera` for the others. */
  protocol?: ProtocolKind;
  /** Verification pairs CSV (img_a,img_b,same), paths relative to `root`. */
  pairs?: string;
  /** A folder layout whose images join the gallery as distractors ('distractor:<n>'). */
  distractors?: string;
  /** Alignment mode the provider was built with; recorded in the result only. */
  align?: string;
  /** CUHK03 only: 'labeled' or 'detected'. */
  cuhk03Variant?: 'labeled' | 'detected';
  /** cross-camera protocol: camid of the query camera (CUHK01 default '1'). */
  queryCamera?: string;
  /** frontal-gallery: largest |yaw| (degrees) counted as frontal; default 15. */
  frontalMaxYaw?: number;
}

export interface YawBinResult {
  /** Queries in the bin that were scored (had a face and a match). */
  queries: number;
  rank1: number | null;
  /** Queries in the bin without a usable face (only binnable with dataset yaw). */
  noFace: number;
  /** Rank-1 hits / (scored + faceless queries of the bin). */
  rank1IncludingNoFace: number | null;
}

/** The JSON-serialisable result of one benchmark run. */
export interface BenchmarkResult {
  rank1: number | null;
  rank5: number | null;
  rank10: number | null;
  mAP: number | null;
  /** Queries the protocol defined (with or without a face). */
  queries: number;
  /** Gallery images used (with a face, distractors included). */
  gallery: number;
  /** Images where extraction succeeded but no face was found; share over extracted images. */
  noFace: { count: number; share: number };
  auc: number | null;
  tarAtFar: Record<'0.1' | '0.01' | '0.001', TarAtFar> | null;
  perYaw: { yawSource: YawSource | 'mixed' | null; bins: Record<string, YawBinResult> };
  imagesPerSecond: number;
  /** Median milliseconds per stage over the images that reported it. */
  stageMs: Record<string, number>;

  rank1IncludingNoFace: number | null;
  /** CMC at ranks 1..20. */
  cmc: Record<string, number>;
  counts: {
    images: number;
    queriesScored: number;
    /** Queries without a usable face: no face found, or extraction failed. */
    queriesNoFace: number;
    queriesWithoutMatch: number;
    junkQueries: number;
    galleryTotal: number;
    galleryNoFace: number;
    distractors: number;
  };
  errors: { count: number; share: number; list: { file: string; code: string; message: string }[] };
  perOcclusion: Record<string, YawBinResult> | null;
  pairs: {
    file: string;
    total: number;
    used: number;
    /** Pairs left out because one of their images had no face or failed extraction. */
    excludedNoFace: number;
    genuine: number;
    impostor: number;
  } | null;
  /** ROC points (thinned to at most ~200) for plotting. */
  rocCurve: { far: number; tar: number }[] | null;
  layout: LayoutKind;
  protocol: ProtocolKind;
  align: string | null;
  embedderId: string;
  root: string;
  distractorsRoot: string | null;
  notes: string[];
  durationS: number;
}

/** Ranks of the CMC curve in the result (1..20). */
export const CMC_RANKS: readonly number[] = Array.from({ length: 20 }, (_, i) => i + 1);

const FARS = ['0.1', '0.01', '0.001'] as const;

interface Extracted {
  face?: ProvidedFace;
  /** Unit-length copy of the face vector. */
  unit?: Float32Array;
  error?: { code: string; message: string };
}

/**
 * Runs one benchmark. For each image the face with the highest quality is used (ties: the
 * provider's first); similarity is cosine (dot product of L2-normalised vectors). Throws
 * ReidbError('invalid_argument') for a bad layout, protocol or pairs file; per-image failures
 * never throw, they are counted.
 */
export async function runBenchmark(
  options: BenchmarkOptions,
  provider: FeatureProvider,
  logger: Logger = silentLogger,
): Promise<BenchmarkResult> {
  const started = Date.now();
  const root = path.resolve(options.root);
  const protocol = options.protocol ?? defaultProtocol(options.layout);

  // Read the dataset, the distractors and the pairs.
  const dataset = readLayout(root, options.layout, { cuhk03Variant: options.cuhk03Variant });
  const notes = [...dataset.notes];
  let items: DatasetItem[] = dataset.items;
  let distractors = 0;
  if (options.distractors !== undefined) {
    const extra = asDistractors(readLayout(options.distractors, 'folder'));
    distractors = extra.length;
    items = [...items, ...extra];
    notes.push(`${extra.length} distractors from ${path.resolve(options.distractors)}`);
  }
  const pairs: Pair[] | undefined =
    options.pairs === undefined ? undefined : readPairs(path.resolve(root, options.pairs), root);

  // Extract every distinct image once.
  const files = uniqueFiles(items, pairs);
  logger.info('bench: extracting', { images: files.length, embedderId: provider.embedderId });
  const extractStart = process.hrtime.bigint();
  const { extracted, stageMs } = await extractAll(provider, files, logger);
  const extractS = Number(process.hrtime.bigint() - extractStart) / 1e9;

  // Build the split; yaw from the dataset labels, else from the mesh.
  const yawOf: YawGetter = (item) => {
    if (item.yaw !== undefined) return { yaw: item.yaw, source: 'dataset' };
    const face = extracted.get(item.file)?.face;
    return face === undefined ? undefined : { yaw: face.yaw, source: 'mesh' };
  };
  const split = buildSplit(items, protocol, {
    layout: options.layout,
    yawOf,
    queryCamera: options.queryCamera,
    frontalMaxYaw: options.frontalMaxYaw,
  });
  notes.push(...split.notes);

  // Keep images with a face; remember where each gallery item went.
  const hasFace = (i: number): boolean => extracted.get(items[i].file)?.unit !== undefined;
  const galleryKept = split.gallery.filter(hasFace);
  const galleryPos = new Map(galleryKept.map((itemIndex, pos) => [itemIndex, pos]));
  const queryKept: number[] = [];
  const selfKept: number[] = [];
  split.queries.forEach((itemIndex, q) => {
    if (!hasFace(itemIndex)) return;
    queryKept.push(itemIndex);
    const selfItem = split.excludeSelf[q] >= 0 ? split.gallery[split.excludeSelf[q]] : -1;
    selfKept.push(selfItem >= 0 ? (galleryPos.get(selfItem) ?? -1) : -1);
  });
  const queriesNoFace = split.queries.filter((i) => !hasFace(i));

  // Rank.
  const toEval = (i: number): EvalItem => ({
    pid: items[i].pid,
    camid: items[i].camid,
    junk: items[i].junk,
    distractor: items[i].distractor,
  });
  const qVec = queryKept.map((i) => extracted.get(items[i].file)!.unit!);
  const gVec = galleryKept.map((i) => extracted.get(items[i].file)!.unit!);
  const similarity = (q: number, g: number): number => dot(qVec[q], gVec[g]);
  const cmc = cmcAndMap(queryKept.map(toEval), galleryKept.map(toEval), similarity, {
    excludeSameCamera: split.excludeSameCamera,
    ranks: [...CMC_RANKS],
    excludeSelf: selfKept,
  });
  const scored = cmc.validQueries > 0;
  const hits1 = cmc.perQuery.filter((p) => p.firstMatchRank === 1).length;
  const withNoFace = cmc.validQueries + queriesNoFace.length;

  // Per condition.
  const binOfQuery = (itemIndex: number): string | undefined => {
    const pose = yawOf(items[itemIndex], itemIndex);
    return pose === undefined ? undefined : yawBin(pose.yaw);
  };
  const yawGroups = groupResults(cmc.perQuery, queryKept, queriesNoFace, binOfQuery);
  const perYawBins: Record<string, YawBinResult> = {};
  for (const bin of YAW_BINS) perYawBins[bin] = yawGroups[bin] ?? emptyBin();
  const yawSources = new Set(
    [...queryKept, ...queriesNoFace].map((i) => yawOf(items[i], i)?.source).filter(isDefined),
  );
  const perYawSource = yawSources.size === 2 ? 'mixed' : ([...yawSources][0] ?? null);
  const hasOcclusion = items.some((item) => item.occlusion !== undefined);
  const perOcclusion = hasOcclusion
    ? groupResults(cmc.perQuery, queryKept, queriesNoFace, (i) => items[i].occlusion)
    : null;

  // Verification pairs.
  const verification = pairs === undefined ? undefined : scorePairs(pairs, extracted);
  const roc = verification === undefined ? undefined : rocFromPairs(verification.scores);

  // Counts.
  const errorList = [...extracted.entries()]
    .filter(([, e]) => e.error !== undefined)
    .map(([file, e]) => ({ file, code: e.error!.code, message: e.error!.message }));
  const noFaceCount = [...extracted.values()].filter((e) => !e.error && !e.face).length;
  const share = (n: number): number => (files.length === 0 ? 0 : n / files.length);

  const result: BenchmarkResult = {
    rank1: scored ? cmc.cmc[1] : null,
    rank5: scored ? cmc.cmc[5] : null,
    rank10: scored ? cmc.cmc[10] : null,
    mAP: scored ? cmc.mAP : null,
    queries: split.queries.length,
    gallery: galleryKept.length,
    noFace: { count: noFaceCount, share: share(noFaceCount) },
    auc: roc?.auc ?? null,
    tarAtFar:
      roc === undefined
        ? null
        : {
            '0.1': tarAtFar(roc, 0.1),
            '0.01': tarAtFar(roc, 0.01),
            '0.001': tarAtFar(roc, 0.001),
          },
    perYaw: { yawSource: perYawSource, bins: perYawBins },
    imagesPerSecond: extractS > 0 ? files.length / extractS : 0,
    stageMs,
    rank1IncludingNoFace: withNoFace > 0 ? hits1 / withNoFace : null,
    cmc: Object.fromEntries(CMC_RANKS.map((k) => [String(k), cmc.cmc[k]])),
    counts: {
      images: files.length,
      queriesScored: cmc.validQueries,
      queriesNoFace: queriesNoFace.length,
      queriesWithoutMatch: cmc.queriesWithoutMatch,
      junkQueries: cmc.junkQueries,
      galleryTotal: split.gallery.length,
      galleryNoFace: split.gallery.length - galleryKept.length,
      distractors,
    },
    errors: { count: errorList.length, share: share(errorList.length), list: errorList },
    perOcclusion,
    pairs:
      verification === undefined || roc === undefined
        ? null
        : {
            file: path.resolve(root, options.pairs!),
            total: pairs!.length,
            used: verification.scores.length,
            excludedNoFace: verification.excluded,
            genuine: roc.genuine,
            impostor: roc.impostor,
          },
    rocCurve: roc === undefined ? null : thinRoc(roc),
    layout: options.layout,
    protocol,
    align: options.align ?? null,
    embedderId: provider.embedderId,
    root,
    distractorsRoot: options.distractors === undefined ? null : path.resolve(options.distractors),
    notes,
    durationS: (Date.now() - started) / 1000,
  };
  if (roc?.reason !== undefined) notes.push(roc.reason);
  logger.info('bench: done', {
    rank1: result.rank1,
    mAP: result.mAP,
    queries: result.queries,
    noFace: noFaceCount,
    errors: errorList.length,
  });
  return result;
}

function uniqueFiles(items: ReadonlyArray<DatasetItem>, pairs: Pair[] | undefined): string[] {
  const files = new Set(items.map((item) => item.file));
  for (const p of pairs ?? []) {
    files.add(p.a);
    files.add(p.b);
  }
  return [...files];
}

async function extractAll(
  provider: FeatureProvider,
  files: string[],
  logger: Logger,
): Promise<{ extracted: Map<string, Extracted>; stageMs: Record<string, number> }> {
  const wanted = new Set(files);
  const extracted = new Map<string, Extracted>();
  const stages = new Map<string, number[]>();

  for await (const image of provider.extract(files)) {
    if (!wanted.has(image.file)) {
      logger.warn('bench: provider returned an unrequested file', { file: image.file });
      continue;
    }
    for (const [stage, ms] of Object.entries(image.stageMs ?? {})) {
      if (!stages.has(stage)) stages.set(stage, []);
      stages.get(stage)!.push(ms);
    }
    if (image.error !== undefined) {
      extracted.set(image.file, { error: image.error });
      continue;
    }
    const face = bestFace(image.faces);
    const unit = face === undefined ? undefined : normalise(face.vector);
    if (face !== undefined && unit === undefined) {
      const error = { code: 'internal', message: 'face vector has zero length or is not finite' };
      extracted.set(image.file, { error });
      continue;
    }
    extracted.set(image.file, { face, unit });
    if (extracted.size % 500 === 0) logger.debug('bench: progress', { done: extracted.size });
  }

  // A file the provider never answered for is an error, not a silent gap.
  for (const file of files) {
    if (!extracted.has(file)) {
      const error = { code: 'internal', message: 'the feature provider returned no result' };
      extracted.set(file, { error });
    }
  }
  const stageMs: Record<string, number> = {};
  for (const [stage, values] of stages) stageMs[stage] = median(values)!;
  return { extracted, stageMs };
}

/** The face with the highest quality; the first one on ties. */
function bestFace(faces: ReadonlyArray<ProvidedFace>): ProvidedFace | undefined {
  let best: ProvidedFace | undefined;
  for (const face of faces) if (best === undefined || face.quality > best.quality) best = face;
  return best;
}

function normalise(v: Float32Array): Float32Array | undefined {
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i] * v[i];
  const norm = Math.sqrt(sum);
  if (!(norm > 0) || !Number.isFinite(norm)) return undefined;
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = v[i] / norm;
  return out;
}

function dot(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) {
    throw new ReidbError('model_mismatch', `embedding lengths differ: ${a.length} vs ${b.length}`);
  }
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function scorePairs(
  pairs: ReadonlyArray<Pair>,
  extracted: Map<string, Extracted>,
): { scores: PairScore[]; excluded: number } {
  const scores: PairScore[] = [];
  let excluded = 0;
  for (const p of pairs) {
    const a = extracted.get(p.a)?.unit;
    const b = extracted.get(p.b)?.unit;
    if (a === undefined || b === undefined) excluded++;
    else scores.push({ score: dot(a, b), same: p.same });
  }
  return { scores, excluded };
}

function emptyBin(): YawBinResult {
  return { queries: 0, rank1: null, noFace: 0, rank1IncludingNoFace: null };
}

/** Rank-1 per group over the scored queries, plus the group's faceless queries. */
function groupResults(
  perQuery: ReadonlyArray<QueryOutcome>,
  queryKept: ReadonlyArray<number>,
  queriesNoFace: ReadonlyArray<number>,
  groupOfItem: (itemIndex: number) => string | undefined,
): Record<string, YawBinResult> {
  const out: Record<string, YawBinResult> = {};
  const scored = rank1ByGroup(perQuery, (q) => groupOfItem(queryKept[q]));
  for (const [group, r] of Object.entries(scored)) {
    out[group] = { queries: r.queries, rank1: r.rank1, noFace: 0, rank1IncludingNoFace: null };
  }
  for (const i of queriesNoFace) {
    const group = groupOfItem(i);
    if (group !== undefined) (out[group] ??= emptyBin()).noFace++;
  }
  for (const [group, r] of Object.entries(out)) {
    const hits = scored[group]?.hits ?? 0;
    const total = r.queries + r.noFace;
    r.rank1IncludingNoFace = total > 0 ? hits / total : null;
  }
  return out;
}

/** At most about 200 ROC points, spread evenly on a log-FAR axis, ends kept. */
function thinRoc(roc: Roc): { far: number; tar: number }[] {
  const points = roc.points.map((p) => ({ far: p.far, tar: p.tar }));
  if (points.length <= 200) return points;
  const out: { far: number; tar: number }[] = [points[0]];
  const lastAtZero = points.filter((p) => p.far === 0).pop();
  if (lastAtZero !== undefined && lastAtZero !== points[0]) out.push(lastAtZero);
  let nextLog = -6;
  for (const p of points.slice(1, -1)) {
    if (p.far <= 0 || Math.log10(p.far) < nextLog) continue;
    out.push(p);
    nextLog = Math.log10(p.far) + 6 / 200;
  }
  out.push(points[points.length - 1]);
  return out;
}

function isDefined<T>(value: T | undefined): value is T {
  return value !== undefined;
}
