import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { readCsv, readLayout, readPairs } from '../../src/bench/layouts.ts';
import { ReidbError } from '../../src/errors.ts';
import { dataPath, hasData } from '../helpers/data.ts';

/** A temp folder with the given files (relative path -> content), removed after the test. */
function tempTree(t: { teardown(fn: () => void): void }, files: Record<string, string>): string {
  const root = mkdtempSync(path.join(os.tmpdir(), 'reidb-bench-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    writeFileSync(path.join(root, rel), content);
  }
  return root;
}

test('folder: images listed, .DS_Store ignored, a text file named .jpg is still an item', (t) => {
  const root = tempTree(t, {
    'alice/a1.jpg': 'x',
    'alice/a2.PNG': 'x',
    'alice/.DS_Store': 'x',
    'alice/notes.txt': 'x',
    'bob/b1.jpeg': 'this is text, not a JPEG',
    '.DS_Store': 'x',
    'pairs.csv': 'img_a,img_b,same\n',
  });
  const ds = readLayout(root, 'folder');
  t.is(ds.kind, 'folder');
  t.deepEqual(
    ds.items.map((i) => [path.relative(root, i.file), i.pid]),
    [
      ['alice/a1.jpg', 'alice'],
      ['alice/a2.PNG', 'alice'],
      ['bob/b1.jpeg', 'bob'],
    ],
  );
  t.true(ds.items.every((i) => path.isAbsolute(i.file)));
  t.deepEqual(ds.ignored.map((f) => path.relative(root, f)).sort(), [
    '.DS_Store',
    'alice/.DS_Store',
    'alice/notes.txt',
  ]);
  t.is(ds.yawSource, undefined);
});

test('folder: missing root and a root without images fail with invalid_argument', (t) => {
  const missing = t.throws(() => readLayout('/nonexistent/reidb-bench', 'folder'), {
    instanceOf: ReidbError,
  });
  t.is(missing.code, 'invalid_argument');
  t.regex(missing.message, /nonexistent\/reidb-bench/);

  const root = tempTree(t, { 'alice/readme.txt': 'x' });
  const empty = t.throws(() => readLayout(root, 'folder'), { instanceOf: ReidbError });
  t.is(empty.code, 'invalid_argument');
  t.regex(empty.message, /no images/);
});

test('market1501: query / bounding_box_test names parsed, junk and distractors flagged', (t) => {
  const root = tempTree(t, {
    'query/0001_c1s1_001051_00.jpg': '',
    'query/0002_c2s1_000301_00.jpg': '',
    'bounding_box_test/0001_c2s1_000976_01.jpg': '',
    'bounding_box_test/0001_c1s1_001101_02.jpg': '',
    'bounding_box_test/-1_c1s1_000401_03.jpg': '',
    'bounding_box_test/0000_c3s1_000551_04.jpg': '',
    'bounding_box_test/Thumbs.db': '',
  });
  const ds = readLayout(root, 'market1501');
  const rows = ds.items.map((i) => [
    path.basename(i.file),
    i.pid,
    i.camid,
    i.split,
    !!i.junk,
    !!i.distractor,
  ]);
  t.deepEqual(rows, [
    ['0001_c1s1_001051_00.jpg', '0001', '1', 'query', false, false],
    ['0002_c2s1_000301_00.jpg', '0002', '2', 'query', false, false],
    ['-1_c1s1_000401_03.jpg', '-1', '1', 'gallery', true, false],
    ['0000_c3s1_000551_04.jpg', '0000', '3', 'gallery', false, true],
    ['0001_c1s1_001101_02.jpg', '0001', '1', 'gallery', false, false],
    ['0001_c2s1_000976_01.jpg', '0001', '2', 'gallery', false, false],
  ]);
  t.is(ds.ignored.length, 1);

  const bad = tempTree(t, {
    'query/0001_c1s1_001051_00.jpg': '',
    'bounding_box_test/person_one.jpg': '',
  });
  const err = t.throws(() => readLayout(bad, 'market1501'), { instanceOf: ReidbError });
  t.regex(err.message, /person_one\.jpg/);

  const noQuery = tempTree(t, { 'bounding_box_test/0001_c1s1_001051_00.jpg': '' });
  t.throws(() => readLayout(noQuery, 'market1501'), { message: /query folder/ });
});

test('msmt17: list files with path label lines', (t) => {
  const root = tempTree(t, {
    'list_query.txt': '0000/0000_000_01_0303morning_0015_0.jpg 0\n',
    'list_gallery.txt':
      '0000/0000_001_05_0303morning_0036_1.jpg 0\n0001/0001_000_02_0303noon_0100_0.jpg 1\n',
    'test/0000/0000_000_01_0303morning_0015_0.jpg': '',
    'test/0000/0000_001_05_0303morning_0036_1.jpg': '',
    'test/0001/0001_000_02_0303noon_0100_0.jpg': '',
  });
  const ds = readLayout(root, 'msmt17');
  t.deepEqual(
    ds.items.map((i) => [path.relative(root, i.file), i.pid, i.camid, i.split]),
    [
      ['test/0000/0000_000_01_0303morning_0015_0.jpg', '0', '01', 'query'],
      ['test/0000/0000_001_05_0303morning_0036_1.jpg', '0', '05', 'gallery'],
      ['test/0001/0001_000_02_0303noon_0100_0.jpg', '1', '02', 'gallery'],
    ],
  );
  t.throws(() => readLayout(tempTree(t, { 'x.txt': '' }), 'msmt17'), { message: /list_query/ });
});

test('cuhk03: needs an explicit variant and an exported folder', (t) => {
  const root = tempTree(t, {
    'labeled/1_1_1.png': '',
    'labeled/1_2_6.png': '',
    'labeled/2_1_1.png': '',
  });
  t.throws(() => readLayout(root, 'cuhk03'), { message: /explicit variant/ });
  t.throws(() => readLayout(root, 'cuhk03', { cuhk03Variant: 'detected' }), {
    message: /detected/,
  });
  const ds = readLayout(root, 'cuhk03', { cuhk03Variant: 'labeled' });
  t.deepEqual(
    ds.items.map((i) => [i.pid, i.camid]),
    [
      ['1', '1'],
      ['1', '2'],
      ['2', '1'],
    ],
  );
  t.true(ds.notes.some((n) => /not the 767\/700/.test(n)));
});

test('labels layout and readPairs on temp files', (t) => {
  const root = tempTree(t, {
    'a.jpg': '',
    'b.jpg': '',
    'labels.csv': 'file,pid,camid,split,note\na.jpg,7,1,query,"x, y"\nb.jpg,7,2,gallery,\n',
    'pairs.csv': 'img_a,img_b,same\na.jpg,b.jpg,1\r\nb.jpg,a.jpg,0\r\n',
  });
  const ds = readLayout(root, 'labels');
  t.deepEqual(
    ds.items.map((i) => [path.basename(i.file), i.pid, i.camid, i.split, i.extra?.note]),
    [
      ['a.jpg', '7', '1', 'query', 'x, y'],
      ['b.jpg', '7', '2', 'gallery', ''],
    ],
  );
  const pairs = readPairs(path.join(root, 'pairs.csv'), root);
  t.deepEqual(pairs, [
    { a: path.join(root, 'a.jpg'), b: path.join(root, 'b.jpg'), same: true },
    { a: path.join(root, 'b.jpg'), b: path.join(root, 'a.jpg'), same: false },
  ]);

  writeFileSync(path.join(root, 'bad.csv'), 'img_a,img_b\na.jpg,b.jpg\n');
  t.throws(() => readPairs(path.join(root, 'bad.csv'), root), {
    message: /lacks column\(s\) same/,
  });
  t.is(readCsv(path.join(root, 'labels.csv')).rows.length, 2);
});

test('real data: cuhk01 names, cameras and labels.csv agree', (t) => {
  if (!hasData(t)) return;
  const ds = readLayout(dataPath('cuhk01_reid'), 'cuhk01');
  t.is(ds.items.length, 1440);
  t.is(ds.items.filter((i) => i.camid === '1').length, 720);
  t.is(new Set(ds.items.map((i) => i.pid)).size, 360);
  const first = ds.items[0];
  t.is(path.basename(first.file), '0001001.png');
  t.is(first.pid, '1');
  t.true(ds.notes.some((n) => /labels\.csv agrees/.test(n)));
});

test('real data: pointing04 pan/tilt become yaw/pitch, mfr2 mask_type becomes occlusion', (t) => {
  if (!hasData(t)) return;
  const p04 = readLayout(dataPath('pointing04_headpose'), 'folder');
  t.is(p04.items.length, 1105);
  t.is(p04.yawSource, 'dataset');
  t.true(p04.items.every((i) => i.yaw !== undefined && i.pitch !== undefined));
  const one = p04.items.find((i) => i.file.endsWith(path.join('person_03', 'face_2032.jpg')))!;
  t.is(one.yaw, -90); // labels.csv: person_03/face_2032.jpg,3,2,-30,-90 (tilt, pan)
  t.is(one.pitch, -30);
  t.is(one.extra?.series, '2');

  const mfr2 = readLayout(dataPath('mfr2_masked'), 'folder');
  t.is(mfr2.items.length, 172);
  t.is(mfr2.yawSource, undefined);
  t.is(mfr2.items.filter((i) => i.occlusion === 'no-mask').length, 65);
  t.is(mfr2.items.filter((i) => i.occlusion === 'surgical_blue').length, 27);
});
