/**
 * Writes a benchmark result to a folder: result.json (the whole result), report.md (markdown
 * tables), cmc.svg (CMC curve, ranks 1..20) and roc.svg (ROC on a log-FAR axis). The SVG is
 * written by hand so the report needs no plotting dependency.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import type { BenchmarkResult, YawBinResult } from './run.ts';

/** Paths of the files written. */
export interface ReportFiles {
  json: string;
  markdown: string;
  cmcSvg: string;
  rocSvg: string;
}

/** Writes result.json, report.md, cmc.svg and roc.svg into `outDir` (created if missing). */
export function writeReport(result: BenchmarkResult, outDir: string): ReportFiles {
  mkdirSync(outDir, { recursive: true });
  const files: ReportFiles = {
    json: path.join(outDir, 'result.json'),
    markdown: path.join(outDir, 'report.md'),
    cmcSvg: path.join(outDir, 'cmc.svg'),
    rocSvg: path.join(outDir, 'roc.svg'),
  };
  writeFileSync(files.json, JSON.stringify(result, null, 2) + '\n');
  writeFileSync(files.markdown, renderMarkdown(result));
  writeFileSync(files.cmcSvg, renderCmcSvg(result));
  writeFileSync(files.rocSvg, renderRocSvg(result));
  return files;
}

const pct = (v: number | null | undefined): string =>
  v === null || v === undefined ? 'n/a' : `${(v * 100).toFixed(2)} %`;
const num = (v: number | null | undefined, digits = 4): string =>
  v === null || v === undefined ? 'n/a' : v.toFixed(digits);

/** The markdown report: summary, per-yaw, per-occlusion, TAR@FAR, stage timings, notes. */
export function renderMarkdown(r: BenchmarkResult): string {
  const lines: string[] = [];
  lines.push(`# reidb benchmark: ${path.basename(r.root)}`, '');
  lines.push(
    `Layout \`${r.layout}\`, protocol \`${r.protocol}\`, embedder \`${r.embedderId}\`` +
      `, align \`${r.align ?? 'n/a'}\`. Root: \`${r.root}\`` +
      (r.distractorsRoot ? `; distractors: \`${r.distractorsRoot}\`` : '') +
      '.',
    '',
  );

  // Summary.
  lines.push('## Summary', '', '| figure | value |', '|---|---|');
  const summary: [string, string][] = [
    ['Rank-1', pct(r.rank1)],
    ['Rank-5', pct(r.rank5)],
    ['Rank-10', pct(r.rank10)],
    ['mAP', pct(r.mAP)],
    ['Rank-1 counting faceless queries as misses', pct(r.rank1IncludingNoFace)],
    ['queries (protocol)', String(r.queries)],
    ['queries scored', String(r.counts.queriesScored)],
    ['queries without a face', String(r.counts.queriesNoFace)],
    ['queries without a match in the gallery', String(r.counts.queriesWithoutMatch)],
    ['gallery images used', `${r.gallery} (of ${r.counts.galleryTotal})`],
    ['images', String(r.counts.images)],
    ['no face', `${r.noFace.count} (${pct(r.noFace.share)})`],
    ['extraction errors', `${r.errors.count} (${pct(r.errors.share)})`],
    ['AUC', num(r.auc)],
    ['images per second', num(r.imagesPerSecond, 2)],
  ];
  for (const [k, v] of summary) lines.push(`| ${k} | ${v} |`);
  lines.push('');

  // Per yaw and per occlusion.
  lines.push(`## Rank-1 per yaw bin (yaw from ${r.perYaw.yawSource ?? 'n/a'})`, '');
  lines.push(...groupTable('abs(yaw) bin, deg', r.perYaw.bins), '');
  if (r.perOcclusion !== null) {
    lines.push('## Rank-1 per occlusion label', '');
    lines.push(...groupTable('label', r.perOcclusion), '');
  }

  // Verification.
  lines.push('## Verification (TAR@FAR)', '');
  if (r.tarAtFar === null || r.pairs === null) lines.push('No pairs file given.', '');
  else {
    lines.push(
      `Pairs: ${r.pairs.used} used of ${r.pairs.total} (${r.pairs.excludedNoFace} left out: ` +
        `an image without a face); ${r.pairs.genuine} genuine, ${r.pairs.impostor} impostor.`,
      '',
      '| FAR | TAR | threshold | note |',
      '|---|---|---|---|',
    );
    for (const [far, v] of Object.entries(r.tarAtFar)) {
      lines.push(`| ${far} | ${pct(v.tar)} | ${num(v.threshold)} | ${v.reason ?? ''} |`);
    }
    lines.push('');
  }

  // Stages, errors, notes.
  const stages = Object.entries(r.stageMs);
  if (stages.length > 0) {
    lines.push('## Median time per stage', '', '| stage | ms |', '|---|---|');
    for (const [stage, ms] of stages) lines.push(`| ${stage} | ${ms.toFixed(2)} |`);
    lines.push('');
  }
  if (r.errors.count > 0) {
    lines.push('## Extraction errors (first 20)', '', '| file | code | message |', '|---|---|---|');
    for (const e of r.errors.list.slice(0, 20)) {
      lines.push(`| ${mdCell(e.file)} | ${e.code} | ${mdCell(e.message)} |`);
    }
    lines.push('');
  }
  lines.push('## Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  return lines.join('\n');
}

function groupTable(label: string, groups: Record<string, YawBinResult>): string[] {
  const rows = [
    `| ${mdCell(label)} | queries scored | Rank-1 | no face | Rank-1 incl. no face |`,
    '|---|---|---|---|---|',
  ];
  for (const [group, g] of Object.entries(groups)) {
    rows.push(
      `| ${mdCell(group)} | ${g.queries} | ${pct(g.rank1)} | ${g.noFace} | ` +
        `${pct(g.rank1IncludingNoFace)} |`,
    );
  }
  return rows;
}

function mdCell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

// ---------------------------------------------------------------------------------------------
// SVG

const W = 480;
const H = 360;
const PAD = { left: 56, right: 16, top: 28, bottom: 44 };

interface Axis {
  min: number;
  max: number;
  ticks: { value: number; label: string }[];
}

/** CMC curve (Rank-k accuracy against k = 1..20) as an SVG document. */
export function renderCmcSvg(r: BenchmarkResult): string {
  const points = Object.entries(r.cmc)
    .map(([k, v]) => ({ x: Number(k), y: v }))
    .sort((a, b) => a.x - b.x);
  const xAxis: Axis = {
    min: 1,
    max: 20,
    ticks: [1, 5, 10, 15, 20].map((k) => ({ value: k, label: String(k) })),
  };
  return chart('CMC', 'rank k', 'identification rate', xAxis, percentAxis(), points);
}

/** ROC (TAR against FAR, FAR on a log10 axis) as an SVG document. */
export function renderRocSvg(r: BenchmarkResult): string {
  const curve = r.rocCurve ?? [];
  const impostors = r.pairs?.impostor ?? 0;
  const minFar = impostors > 0 ? Math.max(1e-4, 10 ** Math.floor(Math.log10(1 / impostors))) : 1e-4;
  const lo = Math.log10(minFar);

  // FAR 0 cannot sit on a log axis: such points are drawn at the axis' left edge.
  const points = curve.map((p) => ({
    x: p.far > 0 ? Math.max(Math.log10(p.far), lo) : lo,
    y: p.tar,
  }));
  const ticks: { value: number; label: string }[] = [];
  for (let e = Math.ceil(lo); e <= 0; e++) ticks.push({ value: e, label: `1e${e}` });
  const title = `ROC${r.auc === null ? '' : ` (AUC ${r.auc.toFixed(4)})`}`;
  return chart(title, 'FAR (log10)', 'TAR', { min: lo, max: 0, ticks }, percentAxis(), points);
}

function percentAxis(): Axis {
  return {
    min: 0,
    max: 1,
    ticks: [0, 0.25, 0.5, 0.75, 1].map((v) => ({ value: v, label: `${v * 100}%` })),
  };
}

function chart(
  title: string,
  xLabel: string,
  yLabel: string,
  xAxis: Axis,
  yAxis: Axis,
  points: { x: number; y: number }[],
): string {
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const sx = (x: number): number =>
    PAD.left + ((x - xAxis.min) / (xAxis.max - xAxis.min || 1)) * plotW;
  const sy = (y: number): number =>
    PAD.top + plotH - ((y - yAxis.min) / (yAxis.max - yAxis.min || 1)) * plotH;
  const f = (v: number): string => v.toFixed(1);
  const out: string[] = [];

  // Frame, grid and ticks.
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" ` +
      `viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">${xml(title)}</text>`,
    `<rect x="${PAD.left}" y="${PAD.top}" width="${plotW}" height="${plotH}" ` +
      'fill="none" stroke="#444"/>',
  );
  for (const t of xAxis.ticks) {
    const x = f(sx(t.value));
    out.push(
      `<line x1="${x}" y1="${PAD.top}" x2="${x}" y2="${PAD.top + plotH}" stroke="#ddd"/>`,
      `<text x="${x}" y="${PAD.top + plotH + 14}" text-anchor="middle">${xml(t.label)}</text>`,
    );
  }
  for (const t of yAxis.ticks) {
    const y = f(sy(t.value));
    out.push(
      `<line x1="${PAD.left}" y1="${y}" x2="${PAD.left + plotW}" y2="${y}" stroke="#ddd"/>`,
      `<text x="${PAD.left - 6}" y="${y}" text-anchor="end" dy="4">${xml(t.label)}</text>`,
    );
  }
  out.push(
    `<text x="${PAD.left + plotW / 2}" y="${H - 8}" text-anchor="middle">${xml(xLabel)}</text>`,
    `<text x="14" y="${PAD.top + plotH / 2}" text-anchor="middle" ` +
      `transform="rotate(-90 14 ${PAD.top + plotH / 2})">${xml(yLabel)}</text>`,
  );

  // The curve.
  const coords = points.map((p) => `${f(sx(p.x))},${f(sy(p.y))}`).join(' ');
  out.push(`<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="${coords}"/>`);
  if (points.length === 0) {
    out.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data</text>`);
  }
  out.push('</svg>', '');
  return out.join('\n');
}

function xml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}
