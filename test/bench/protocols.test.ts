import test from 'ava';

import type { DatasetItem } from '../../src/bench/layouts.ts';
import { buildSplit, defaultProtocol } from '../../src/bench/protocols.ts';

const item = (pid: string, extra: Partial<DatasetItem> = {}): DatasetItem => ({
  file: `/d/${pid}/${Math.random()}.jpg`,
  pid,
  ...extra,
});

test('loo: single-image identities and distractors are gallery only; self excluded', (t) => {
  const items = [item('A'), item('A'), item('B'), item('distractor:0', { distractor: true })];
  const s = buildSplit(items, 'loo');
  t.deepEqual(s.queries, [0, 1]);
  t.deepEqual(s.gallery, [0, 1, 2, 3]);
  t.deepEqual(s.excludeSelf, [0, 1]);
  t.false(s.excludeSameCamera);
  t.is(defaultProtocol('folder'), 'loo');
});

test('frontal-gallery: |yaw| <= 15 is gallery, yaw from labels else mesh', (t) => {
  const items = [
    item('A', { yaw: 0 }),
    item('A', { yaw: -15 }),
    item('A', { yaw: 45 }),
    item('B'), // mesh says 20 -> probe
    item('B'), // no yaw at all -> left out
  ];
  const mesh = new Map([[3, 20]]);
  const s = buildSplit(items, 'frontal-gallery', {
    yawOf: (it, i) =>
      it.yaw !== undefined
        ? { yaw: it.yaw, source: 'dataset' }
        : mesh.has(i)
          ? { yaw: mesh.get(i)!, source: 'mesh' }
          : undefined,
  });
  t.deepEqual(s.gallery, [0, 1]);
  t.deepEqual(s.queries, [2, 3]);
  t.is(s.yawSource, 'mixed');
  t.true(s.notes.some((n) => /1 images with unknown yaw/.test(n)));
  t.true(s.notes.some((n) => /1 identities have no frontal/.test(n)));
  t.throws(() => buildSplit(items, 'frontal-gallery'), { message: /yaw getter/ });
});

test('cross-camera: own lists, CUHK01 camera A vs B, all-vs-all fallback', (t) => {
  const listed = [
    item('1', { camid: '1', split: 'query' }),
    item('1', { camid: '2', split: 'gallery' }),
    item('-1', { camid: '1', split: 'gallery', junk: true }),
  ];
  const own = buildSplit(listed, 'cross-camera', { layout: 'market1501' });
  t.deepEqual([own.queries, own.gallery], [[0], [1, 2]]);
  t.true(own.excludeSameCamera);

  const cuhk = [item('1', { camid: '1' }), item('1', { camid: '2' }), item('2', { camid: '1' })];
  const ab = buildSplit(cuhk, 'cross-camera', { layout: 'cuhk01' });
  t.deepEqual([ab.queries, ab.gallery], [[0, 2], [1]]);
  const ba = buildSplit(cuhk, 'cross-camera', { layout: 'cuhk01', queryCamera: '2' });
  t.deepEqual([ba.queries, ba.gallery], [[1], [0, 2]]);

  const all = buildSplit(cuhk, 'cross-camera', { layout: 'labels' });
  t.deepEqual(
    [all.queries, all.gallery, all.excludeSelf],
    [
      [0, 1, 2],
      [0, 1, 2],
      [0, 1, 2],
    ],
  );
  t.throws(() => buildSplit([item('1')], 'cross-camera', { layout: 'labels' }), {
    message: /needs a camid/,
  });
});
