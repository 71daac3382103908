import test from 'ava';

import {
  cmcAndMap,
  median,
  rank1ByGroup,
  rocFromPairs,
  tarAtFar,
  yawBin,
  type EvalItem,
  type PairScore,
} from '../../src/bench/metrics.ts';

const close = (a: number, b: number): boolean => Math.abs(a - b) < 1e-9;

test('cmcAndMap: 3 queries x 5 gallery toy with hand-computed ranks and AP', (t) => {
  const queries: EvalItem[] = [
    { pid: 'A', camid: '1' },
    { pid: 'B', camid: '1' },
    { pid: 'C', camid: '1' },
  ];
  const gallery: EvalItem[] = [
    { pid: 'A', camid: '2' },
    { pid: 'B', camid: '2' },
    { pid: 'A', camid: '2' },
    { pid: 'C', camid: '2' },
    { pid: 'B', camid: '2' },
  ];
  const sim = [
    [0.9, 0.8, 0.5, 0.3, 0.1], // order g0 A, g1 B, g2 A, g3, g4 -> hits at 1 and 3
    [0.9, 0.2, 0.8, 0.7, 0.6], // order g0, g2, g3, g4 B, g1 B -> hits at 4 and 5
    [0.1, 0.9, 0.2, 0.8, 0.3], // order g1, g3 C, ... -> hit at 2
  ];
  const r = cmcAndMap(queries, gallery, sim, { excludeSameCamera: true, ranks: [1, 3, 5] });

  // q0: AP = (1/1 + 2/3) / 2 = 5/6; q1: AP = (1/4 + 2/5) / 2 = 0.325; q2: AP = 1/2.
  t.deepEqual(
    r.perQuery.map((p) => p.firstMatchRank),
    [1, 4, 2],
  );
  t.true(close(r.perQuery[0].ap!, 5 / 6));
  t.true(close(r.perQuery[1].ap!, 0.325));
  t.true(close(r.perQuery[2].ap!, 0.5));

  // CMC@1 = 1/3 (q0), @3 = 2/3 (q0, q2), @5 = 1; mAP = (5/6 + 0.325 + 0.5) / 3.
  t.true(close(r.cmc[1], 1 / 3));
  t.true(close(r.cmc[3], 2 / 3));
  t.true(close(r.cmc[5], 1));
  t.true(close(r.mAP, (5 / 6 + 0.325 + 0.5) / 3));
  t.is(r.validQueries, 3);
  t.is(r.queriesWithoutMatch, 0);
});

test('cmcAndMap: the function form gives the same answer as the matrix form', (t) => {
  const queries: EvalItem[] = [{ pid: 'A' }, { pid: 'B' }];
  const gallery: EvalItem[] = [{ pid: 'B' }, { pid: 'A' }, { pid: 'A' }];
  const sim = [
    [0.3, 0.2, 0.9],
    [0.1, 0.5, 0.4],
  ];
  const options = { excludeSameCamera: false, ranks: [1, 2] };
  const a = cmcAndMap(queries, gallery, sim, options);
  const b = cmcAndMap(queries, gallery, (q, g) => sim[q][g], options);
  t.deepEqual(a, b);

  // q0: g2 A (hit, rank 1), g0 B, g1 A (hit, rank 3): AP = (1 + 2/3) / 2.
  // q1: g1 A, g2 A, g0 B (hit, rank 3): AP = 1/3.
  t.true(close(a.mAP, ((1 + 2 / 3) / 2 + 1 / 3) / 2));
  t.true(close(a.cmc[1], 0.5));
  t.true(close(a.cmc[2], 0.5));
});

test('cmcAndMap: single camera - same-camera exclusion removes every match, query counted', (t) => {
  const queries: EvalItem[] = [{ pid: 'A', camid: '1' }];
  const gallery: EvalItem[] = [
    { pid: 'A', camid: '1' },
    { pid: 'B', camid: '1' },
  ];
  const sim = [[0.9, 0.1]];
  const r = cmcAndMap(queries, gallery, sim, { excludeSameCamera: true, ranks: [1] });
  t.is(r.validQueries, 0);
  t.is(r.queriesWithoutMatch, 1);
  t.is(r.perQuery[0].skipped, 'no_match');
  t.is(r.perQuery[0].candidates, 1); // only B is left
  t.is(r.mAP, 0);
  t.is(r.cmc[1], 0);

  // Without the rule the same data gives a rank-1 hit.
  const open = cmcAndMap(queries, gallery, sim, { excludeSameCamera: false, ranks: [1] });
  t.is(open.cmc[1], 1);
  t.is(open.mAP, 1);
});

test('cmcAndMap: junk removed, distractors kept as negatives', (t) => {
  const queries: EvalItem[] = [{ pid: 'A' }, { pid: '0000' }, { pid: '-1' }];
  const gallery: EvalItem[] = [
    { pid: '-1' }, // 0.9, junk by pid: removed
    { pid: 'A' }, // 0.5
    { pid: '0000' }, // 0.7, distractor: kept
    { pid: 'A', junk: true }, // 0.95, junk by flag: removed (neither hit nor miss)
    { pid: 'distractor:3' }, // 0.6, distractor: kept
  ];
  const row = [0.9, 0.5, 0.7, 0.95, 0.6];
  const options = { excludeSameCamera: false, ranks: [1, 3] };
  const r = cmcAndMap(queries, gallery, [row, row, row], options);

  // q0 ranking after removal: 0000 (0.7), distractor:3 (0.6), A (0.5) -> rank 3, AP = 1/3.
  t.is(r.perQuery[0].firstMatchRank, 3);
  t.is(r.perQuery[0].candidates, 3);
  t.true(close(r.perQuery[0].ap!, 1 / 3));
  t.is(r.cmc[1], 0);
  t.is(r.cmc[3], 1);

  // A distractor or junk query is never scored (a distractor never matches another one).
  t.is(r.junkQueries, 2);
  t.is(r.validQueries, 1);
  t.is(r.perQuery[1].skipped, 'junk_query');
});

test('cmcAndMap: ties keep gallery order; excludeSelf drops the query image', (t) => {
  const q: EvalItem[] = [{ pid: 'A' }];

  // Tie at 0.5: the earlier gallery item ranks first.
  const bFirst = cmcAndMap(q, [{ pid: 'B' }, { pid: 'A' }], [[0.5, 0.5]], {
    excludeSameCamera: false,
    ranks: [1],
  });
  t.is(bFirst.perQuery[0].firstMatchRank, 2);
  const aFirst = cmcAndMap(q, [{ pid: 'A' }, { pid: 'B' }], [[0.5, 0.5]], {
    excludeSameCamera: false,
    ranks: [1],
  });
  t.is(aFirst.perQuery[0].firstMatchRank, 1);

  // Leave-one-out: gallery[0] is the query itself (score 1); without it B (0.6) beats A (0.4).
  const gallery: EvalItem[] = [{ pid: 'A' }, { pid: 'B' }, { pid: 'A' }];
  const r = cmcAndMap(q, gallery, [[1, 0.6, 0.4]], {
    excludeSameCamera: false,
    ranks: [1, 2],
    excludeSelf: [0],
  });
  t.is(r.perQuery[0].firstMatchRank, 2);
  t.true(close(r.mAP, 0.5));
});

test('cmcAndMap: rejects a matrix of the wrong shape and bad ranks', (t) => {
  const q: EvalItem[] = [{ pid: 'A' }];
  const g: EvalItem[] = [{ pid: 'A' }, { pid: 'B' }];
  t.throws(() => cmcAndMap(q, g, [[1]], { excludeSameCamera: false, ranks: [1] }), {
    message: /1 x 2/,
  });
  t.throws(() => cmcAndMap(q, g, [[1, 0]], { excludeSameCamera: false, ranks: [0] }), {
    message: /positive integer/,
  });
});

const pairs = (genuine: number[], impostor: number[]): PairScore[] => [
  ...genuine.map((score) => ({ score, same: true })),
  ...impostor.map((score) => ({ score, same: false })),
];

test('rocFromPairs: AUC 1, 0.5, 0 and a tie case', (t) => {
  t.is(rocFromPairs(pairs([0.9, 0.8], [0.3, 0.1])).auc, 1);
  t.is(rocFromPairs(pairs([0.1, 0.2], [0.8, 0.9])).auc, 0);

  // Every score equal: one step from (0, 0) to (1, 1), area 1/2.
  t.is(rocFromPairs(pairs([0.5, 0.5], [0.5, 0.5])).auc, 0.5);

  // Interleaved: genuine 0.8 beats both impostors, 0.2 beats none -> 2/4.
  t.is(rocFromPairs(pairs([0.8, 0.2], [0.6, 0.4])).auc, 0.5);

  // Tie: genuine {0.9, 0.5}, impostor {0.5, 0.1}. Mann-Whitney: 0.9>0.5, 0.9>0.1, 0.5=0.5 (1/2),
  // 0.5>0.1 -> 3.5 / 4 = 0.875. Points: (0,0) (0,.5) (.5,1) (1,1).
  const roc = rocFromPairs(pairs([0.9, 0.5], [0.5, 0.1]));
  t.is(roc.auc, 0.875);
  t.deepEqual(
    roc.points.map((p) => [p.far, p.tar]),
    [
      [0, 0],
      [0, 0.5],
      [0.5, 1],
      [1, 1],
    ],
  );

  // One class missing: no AUC, a reason instead.
  const none = rocFromPairs(pairs([0.9], []));
  t.is(none.auc, null);
  t.regex(none.reason!, /impostor 0/);
});

test('tarAtFar: 10 impostors give FAR 0.1, too few for 0.01 and 0.001', (t) => {
  // Descending: 0.99 g, 0.95 i (FAR .1), 0.9 g, 0.8 g, 0.7 g, 0.65 g (TAR .5), 0.6 i (FAR .2) ...
  // The most permissive threshold with FAR <= 0.1 is 0.65, where 5 of 10 genuine pairs pass.
  const scores = pairs(
    [0.99, 0.9, 0.8, 0.7, 0.65, 0.55, 0.45, 0.3, 0.2, 0.05],
    [0.95, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1],
  );
  const at01 = tarAtFar(scores, 0.1);
  t.is(at01.tar, 0.5);
  t.is(at01.threshold, 0.65);
  t.is(at01.achievedFar, 0.1);
  t.is(at01.impostors, 10);

  const roc = rocFromPairs(scores);
  const at001 = tarAtFar(roc, 0.01);
  t.is(at001.tar, null);
  t.regex(at001.reason!, /needs >= 100 impostor pairs, have 10/);
  const at0001 = tarAtFar(roc, 0.001);
  t.is(at0001.tar, null);
  t.regex(at0001.reason!, /needs >= 1000/);

  t.throws(() => tarAtFar(roc, 0), { message: /target FAR/ });
});

test('yawBin: right-closed 15-degree bins on |yaw|', (t) => {
  t.is(yawBin(0), '0-15');
  t.is(yawBin(15), '0-15');
  t.is(yawBin(-15.01), '15-30');
  t.is(yawBin(30), '15-30');
  t.is(yawBin(-45), '30-45');
  t.is(yawBin(60), '45-60');
  t.is(yawBin(75), '60+');
  t.is(yawBin(-90), '60+');
  t.throws(() => yawBin(Number.NaN), { message: /finite/ });
});

test('rank1ByGroup and median', (t) => {
  const perQuery = [
    { firstMatchRank: 1, ap: 1, candidates: 3 },
    { firstMatchRank: 2, ap: 0.5, candidates: 3 },
    { firstMatchRank: null, ap: null, candidates: 3, skipped: 'no_match' as const },
    { firstMatchRank: 1, ap: 1, candidates: 3 },
  ];
  const groups = rank1ByGroup(perQuery, (q) => (q === 3 ? 'b' : 'a'));
  t.deepEqual(groups, {
    a: { queries: 2, hits: 1, rank1: 0.5 },
    b: { queries: 1, hits: 1, rank1: 1 },
  });
  t.is(median([3, 1, 2]), 2);
  t.is(median([4, 1, 2, 3]), 2.5);
  t.is(median([]), null);
});
