/**
 * Evaluation metrics of the benchmark harness: CMC / mAP for re-identification, ROC / AUC and
 * TAR@FAR for verification, and yaw bins for per-pose figures. Pure functions: no I/O, no
 * state. Similarities are "larger is more alike" (cosine similarity in [-1, 1] in reidb).
 */
import { ReidbError } from '../errors.ts';

/** One query or gallery entry as the metrics see it. */
export interface EvalItem {
  /** Identity label. '-1' is junk; '0000', 'distractor' and 'distractor:*' are distractors. */
  pid: string;
  /** Camera label; when missing the item is never removed by the same-camera rule. */
  camid?: string;
  /** Junk: removed from every ranking, as if it were not in the gallery. */
  junk?: boolean;
  /** Distractor: kept in the ranking, never a correct match (not even for another distractor). */
  distractor?: boolean;
}

/** `similarity(queryIndex, galleryIndex)`, or rows of a precomputed query x gallery matrix. */
export type SimilarityInput =
  ((queryIndex: number, galleryIndex: number) => number) | ReadonlyArray<ArrayLike<number>>;

export interface CmcOptions {
  /**
   * Market-1501 rule: gallery items with the query's pid AND the query's camid are removed
   * from that query's ranking (they are neither hits nor misses).
   */
  excludeSameCamera: boolean;
  /** Ranks k (1-based, positive integers) at which CMC is reported. */
  ranks: number[];
  /**
   * `excludeSelf[q]` is the gallery index that holds the query's own image (removed from its
   * ranking), or -1 when the query is not in the gallery. Used by leave-one-out protocols.
   */
  excludeSelf?: ReadonlyArray<number>;
}

/** What happened to one query. */
export interface QueryOutcome {
  /** 1-based rank of the first correct match; null when the query was skipped. */
  firstMatchRank: number | null;
  /** Average precision; null when the query was skipped. */
  ap: number | null;
  /** Gallery items left in this query's ranking after the removal rules. */
  candidates: number;
  /** Why the query was skipped: no valid match left, or the query itself is junk/distractor. */
  skipped?: 'no_match' | 'junk_query';
}

export interface CmcResult {
  /** CMC[k]: share of valid queries whose first correct match is within the top k. */
  cmc: Record<number, number>;
  /** Mean AP over valid queries (0 when there are none). */
  mAP: number;
  /** Queries that had at least one valid match and were scored. */
  validQueries: number;
  /** Queries skipped because no correct match was left in their gallery. */
  queriesWithoutMatch: number;
  /** Queries skipped because the query itself is junk or a distractor. */
  junkQueries: number;
  /** One entry per query, in query order. */
  perQuery: QueryOutcome[];
}

/** True for junk items: explicit flag or pid '-1' (Market-1501 convention). */
export function isJunk(item: EvalItem): boolean {
  return item.junk === true || item.pid === '-1';
}

/**
 * True for distractors: explicit flag, pid '0000' (Market-1501 DPM false alarms), 'distractor',
 * or 'distractor:<n>' (extra gallery clutter added by the harness).
 */
export function isDistractor(item: EvalItem): boolean {
  return (
    item.distractor === true ||
    item.pid === '0000' ||
    item.pid === 'distractor' ||
    item.pid.startsWith('distractor:')
  );
}

/**
 * CMC and mAP with Market-1501 semantics.
 *
 * For each query the gallery is filtered: junk items go, the query's own image goes (when
 * `excludeSelf` names it) and, with `excludeSameCamera`, items of the same pid and the same
 * camid go. Distractors stay as negatives. The remaining items are ranked by descending
 * similarity; ties keep gallery order (a stable sort on gallery index, so an earlier gallery
 * item wins a tie), and NaN similarities rank last. A query with no correct match left is
 * skipped and counted in `queriesWithoutMatch`; it is not part of CMC or mAP.
 *
 * AP is the mean of the precision at the rank of each correct match (torchreid's definition;
 * the original Market-1501 MATLAB code uses a trapezoid over recall, which differs slightly).
 * CMC[k] for k beyond the candidate count is 1 for a valid query (its match is ranked somewhere).
 */
export function cmcAndMap(
  queries: ReadonlyArray<EvalItem>,
  gallery: ReadonlyArray<EvalItem>,
  similarity: SimilarityInput,
  options: CmcOptions,
): CmcResult {
  validateCmcInput(queries, gallery, similarity, options);
  const score = toScoreFunction(similarity);
  const ranks = [...new Set(options.ranks)].sort((a, b) => a - b);
  const hitsAt = new Map<number, number>(ranks.map((k) => [k, 0]));
  const perQuery: QueryOutcome[] = [];
  let apSum = 0;
  let validQueries = 0;
  let queriesWithoutMatch = 0;
  let junkQueries = 0;

  for (let q = 0; q < queries.length; q++) {
    const query = queries[q];
    if (isJunk(query) || isDistractor(query)) {
      junkQueries++;
      perQuery.push({ firstMatchRank: null, ap: null, candidates: 0, skipped: 'junk_query' });
      continue;
    }

    // Filter the gallery for this query.
    const self = options.excludeSelf?.[q] ?? -1;
    const kept: number[] = [];
    const scores: number[] = [];
    for (let g = 0; g < gallery.length; g++) {
      const item = gallery[g];
      if (g === self || isJunk(item)) continue;
      if (options.excludeSameCamera && sameCameraSamePid(query, item)) continue;
      const s = score(q, g);
      kept.push(g);
      scores.push(Number.isNaN(s) ? Number.NEGATIVE_INFINITY : s);
    }

    // Rank: descending similarity, stable by gallery index.
    const order = kept.map((_, i) => i);
    order.sort((a, b) => scores[b] - scores[a] || kept[a] - kept[b]);

    // Walk the ranking: first match and precision at each match.
    let matches = 0;
    let precisionSum = 0;
    let firstMatchRank: number | null = null;
    for (let r = 0; r < order.length; r++) {
      const item = gallery[kept[order[r]]];
      if (item.pid !== query.pid || isDistractor(item)) continue;
      matches++;
      precisionSum += matches / (r + 1);
      if (firstMatchRank === null) firstMatchRank = r + 1;
    }
    if (firstMatchRank === null) {
      queriesWithoutMatch++;
      const candidates = kept.length;
      perQuery.push({ firstMatchRank: null, ap: null, candidates, skipped: 'no_match' });
      continue;
    }

    // Accumulate.
    const ap = precisionSum / matches;
    validQueries++;
    apSum += ap;
    for (const k of ranks) if (firstMatchRank <= k) hitsAt.set(k, (hitsAt.get(k) ?? 0) + 1);
    perQuery.push({ firstMatchRank, ap, candidates: kept.length });
  }

  const cmc: Record<number, number> = {};
  for (const k of ranks) cmc[k] = validQueries === 0 ? 0 : (hitsAt.get(k) ?? 0) / validQueries;
  const mAP = validQueries === 0 ? 0 : apSum / validQueries;
  return { cmc, mAP, validQueries, queriesWithoutMatch, junkQueries, perQuery };
}

function sameCameraSamePid(query: EvalItem, item: EvalItem): boolean {
  return (
    query.camid !== undefined &&
    item.camid !== undefined &&
    query.camid === item.camid &&
    query.pid === item.pid
  );
}

function toScoreFunction(similarity: SimilarityInput): (q: number, g: number) => number {
  if (typeof similarity === 'function') return similarity;
  return (q, g) => similarity[q][g];
}

function validateCmcInput(
  queries: ReadonlyArray<EvalItem>,
  gallery: ReadonlyArray<EvalItem>,
  similarity: SimilarityInput,
  options: CmcOptions,
): void {
  for (const k of options.ranks) {
    if (!Number.isInteger(k) || k < 1) {
      throw new ReidbError('invalid_argument', `CMC rank must be a positive integer, got ${k}`, {
        input: 'ranks',
      });
    }
  }
  if (options.excludeSelf !== undefined && options.excludeSelf.length !== queries.length) {
    throw new ReidbError(
      'invalid_argument',
      `excludeSelf has ${options.excludeSelf.length} entries for ${queries.length} queries`,
      { input: 'excludeSelf' },
    );
  }
  if (typeof similarity === 'function') return;
  const badRow = similarity.findIndex((row) => row.length !== gallery.length);
  if (similarity.length !== queries.length || badRow >= 0) {
    throw new ReidbError(
      'invalid_argument',
      `similarity matrix must be ${queries.length} x ${gallery.length}`,
      { input: 'similarity', details: { rows: similarity.length, badRow } },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Verification: ROC, AUC, TAR@FAR

/** One verification pair: its similarity and whether both images show the same identity. */
export interface PairScore {
  score: number;
  same: boolean;
}

/** One ROC operating point: accept a pair when its score >= threshold. */
export interface RocPoint {
  /** False accept rate: accepted impostor pairs / impostor pairs. */
  far: number;
  /** True accept rate: accepted genuine pairs / genuine pairs. */
  tar: number;
  /** Infinity for the first point (accept nothing; serialises to null in JSON). */
  threshold: number;
}

export interface Roc {
  /** Area under the ROC; null (with `reason`) when one of the two classes is empty. */
  auc: number | null;
  /** Operating points by decreasing threshold, from (0, 0) to (1, 1). */
  points: RocPoint[];
  genuine: number;
  impostor: number;
  reason?: string;
}

/**
 * ROC of verification pairs. Points are taken at every distinct score (accept score >=
 * threshold), so tied scores move FAR and TAR together in one step; the trapezoid area over
 * these points equals the Mann-Whitney statistic with ties counted as one half, i.e. the
 * probability that a random genuine pair scores above a random impostor pair.
 * NaN scores are rejected with invalid_argument.
 */
export function rocFromPairs(scores: ReadonlyArray<PairScore>): Roc {
  if (scores.some((s) => Number.isNaN(s.score))) {
    throw new ReidbError('invalid_argument', 'pair scores must not be NaN', { input: 'scores' });
  }
  const genuine = scores.filter((s) => s.same).length;
  const impostor = scores.length - genuine;
  const points: RocPoint[] = [{ far: 0, tar: 0, threshold: Number.POSITIVE_INFINITY }];
  if (genuine === 0 || impostor === 0) {
    const reason = `ROC needs genuine and impostor pairs (genuine ${genuine}, impostor ${impostor})`;
    return { auc: null, points, genuine, impostor, reason };
  }

  // Walk the scores downwards, one point per distinct score.
  const sorted = [...scores].sort((a, b) => b.score - a.score);
  let tp = 0;
  let fp = 0;
  for (let i = 0; i < sorted.length;) {
    const threshold = sorted[i].score;
    while (i < sorted.length && sorted[i].score === threshold) {
      if (sorted[i].same) tp++;
      else fp++;
      i++;
    }
    points.push({ far: fp / impostor, tar: tp / genuine, threshold });
  }

  // Trapezoid area.
  let auc = 0;
  for (let i = 1; i < points.length; i++) {
    auc += ((points[i].far - points[i - 1].far) * (points[i].tar + points[i - 1].tar)) / 2;
  }
  return { auc, points, genuine, impostor };
}

export interface TarAtFar {
  /** The target FAR. */
  far: number;
  /** TAR at the chosen threshold; null (with `reason`) when it cannot be measured honestly. */
  tar: number | null;
  threshold: number | null;
  /** FAR actually reached at the chosen threshold (<= the target). */
  achievedFar: number | null;
  impostors: number;
  reason?: string;
}

/**
 * TAR at a target FAR: among the ROC thresholds whose FAR does not exceed the target, the most
 * permissive one (lowest threshold, hence highest TAR) is used. A FAR of f can only be told
 * apart from 0 with at least ceil(1/f) impostor pairs (FAR 0.001 needs >= 1000); with fewer,
 * `tar` is null and `reason` says why, instead of a number that only reflects the sample size.
 */
export function tarAtFar(input: Roc | ReadonlyArray<PairScore>, far: number): TarAtFar {
  if (!(far > 0 && far <= 1)) {
    throw new ReidbError('invalid_argument', `target FAR must be in (0, 1], got ${far}`, {
      input: 'far',
    });
  }
  const roc = isRoc(input) ? input : rocFromPairs(input);
  const needed = Math.ceil(1 / far - 1e-9);
  const base = { far, impostors: roc.impostor };
  if (roc.auc === null) {
    return { ...base, tar: null, threshold: null, achievedFar: null, reason: roc.reason };
  }
  if (roc.impostor < needed) {
    const reason = `FAR ${far} needs >= ${needed} impostor pairs, have ${roc.impostor}`;
    return { ...base, tar: null, threshold: null, achievedFar: null, reason };
  }

  // Points are ordered by decreasing threshold with non-decreasing FAR and TAR.
  let best = roc.points[0];
  for (const p of roc.points) {
    if (p.far <= far + 1e-12) best = p;
    else break;
  }
  return { ...base, tar: best.tar, threshold: best.threshold, achievedFar: best.far };
}

function isRoc(input: Roc | ReadonlyArray<PairScore>): input is Roc {
  return !Array.isArray(input) && 'points' in input;
}

// ---------------------------------------------------------------------------------------------
// Pose bins

export type YawBin = '0-15' | '15-30' | '30-45' | '45-60' | '60+';

export const YAW_BINS: readonly YawBin[] = ['0-15', '15-30', '30-45', '45-60', '60+'];

/**
 * Bin of a yaw angle in degrees, on |yaw|. Bins are closed on the right: [0, 15], (15, 30],
 * (30, 45], (45, 60], (60, inf). So 15 deg is still "0-15" (the frontal-gallery rule uses
 * |yaw| <= 15 as well), 45 deg is "30-45" and 60 deg is "45-60".
 */
export function yawBin(yawDeg: number): YawBin {
  if (!Number.isFinite(yawDeg)) {
    throw new ReidbError('invalid_argument', `yaw must be a finite number, got ${yawDeg}`, {
      input: 'yaw',
    });
  }
  const a = Math.abs(yawDeg);
  if (a <= 15) return '0-15';
  if (a <= 30) return '15-30';
  if (a <= 45) return '30-45';
  if (a <= 60) return '45-60';
  return '60+';
}

export interface GroupRank1 {
  /** Valid (scored) queries in the group. */
  queries: number;
  /** Of those, queries whose first correct match is at rank 1. */
  hits: number;
  /** hits / queries; null when the group has no valid query. */
  rank1: number | null;
}

/**
 * Rank-1 per group (yaw bin, mask type, ...) from the per-query outcomes of `cmcAndMap`.
 * `groupOf(q)` names the group of query q; undefined leaves the query out. Skipped queries are
 * not counted (the caller reports them separately).
 */
export function rank1ByGroup(
  perQuery: ReadonlyArray<QueryOutcome>,
  groupOf: (queryIndex: number) => string | undefined,
): Record<string, GroupRank1> {
  const out: Record<string, GroupRank1> = {};
  perQuery.forEach((outcome, q) => {
    if (outcome.firstMatchRank === null) return;
    const group = groupOf(q);
    if (group === undefined) return;
    const entry = (out[group] ??= { queries: 0, hits: 0, rank1: null });
    entry.queries++;
    if (outcome.firstMatchRank === 1) entry.hits++;
  });
  for (const entry of Object.values(out)) entry.rank1 = entry.hits / entry.queries;
  return out;
}

/** Median of a list of numbers; null for an empty list. */
export function median(values: ReadonlyArray<number>): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
