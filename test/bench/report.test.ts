import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { writeReport } from '../../src/bench/report.ts';
import { runBenchmark, type FeatureProvider } from '../../src/bench/run.ts';

test('writeReport: result.json, report.md and two SVG charts with polylines', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-report-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // A tiny dataset: two identities, two images each, plus a pairs file.
  const root = path.join(dir, 'data');
  for (const rel of ['A/1.jpg', 'A/2.jpg', 'B/1.jpg', 'B/2.jpg']) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), '');
  }
  writeFileSync(
    path.join(root, 'pairs.csv'),
    'img_a,img_b,same\nA/1.jpg,A/2.jpg,1\nB/1.jpg,B/2.jpg,1\n' +
      'A/1.jpg,B/1.jpg,0\nA/2.jpg,B/2.jpg,0\n',
  );
  const angle: Record<string, number> = {
    'A/1.jpg': 0,
    'A/2.jpg': 20,
    'B/1.jpg': 90,
    'B/2.jpg': 60,
  };
  const provider: FeatureProvider = {
    embedderId: 'fake',
    async *extract(files) {
      for (const file of files) {
        const r = (angle[path.relative(root, file)] * Math.PI) / 180;
        const vector = Float32Array.from([Math.cos(r), Math.sin(r)]);
        yield { file, faces: [{ vector, yaw: 0, pitch: 0, roll: 0, quality: 1 }] };
      }
    },
  };
  const result = await runBenchmark({ root, layout: 'folder', pairs: 'pairs.csv' }, provider);

  const out = path.join(dir, 'out');
  const files = writeReport(result, out);
  const json = JSON.parse(readFileSync(files.json, 'utf8'));
  t.is(json.rank1, result.rank1);
  t.is(json.tarAtFar['0.1'].tar, null);

  const md = readFileSync(files.markdown, 'utf8');
  t.regex(md, /## Summary/);
  t.regex(md, /\| Rank-1 \| 100\.00 % \|/);
  t.regex(md, /## Rank-1 per yaw bin \(yaw from mesh\)/);
  t.regex(md, /\| 0\.001 \| n\/a \|/);

  for (const svgFile of [files.cmcSvg, files.rocSvg]) {
    const svg = readFileSync(svgFile, 'utf8');
    t.true(svg.startsWith('<svg'), svgFile);
    t.true(svg.trimEnd().endsWith('</svg>'));
    const points = /<polyline[^>]* points="([^"]+)"/.exec(svg);
    t.truthy(points, `${svgFile} has a polyline`);
    t.true(points![1].split(' ').every((p) => /^-?\d+(\.\d+)?,-?\d+(\.\d+)?$/.test(p)));

    // XML-ish: every opened element is closed or self-closing.
    const opened = (svg.match(/<(svg|text)\b/g) ?? []).length;
    const closed = (svg.match(/<\/(svg|text)>/g) ?? []).length;
    t.is(opened, closed);
  }
  const cmcPoints = /<polyline[^>]* points="([^"]+)"/.exec(readFileSync(files.cmcSvg, 'utf8'))!;
  t.is(cmcPoints[1].split(' ').length, 20);
});
