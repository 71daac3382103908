import test from 'ava';

import { createPKSampler, mulberry32 } from '../../src/train/sampler.ts';

/** 10 identities with 1 to 19 faces each (unequal on purpose), labels shuffled by position. */
function unevenLabels(): string[] {
  const labels: string[] = [];
  for (let id = 0; id < 10; id++) for (let f = 0; f < 1 + 2 * id; f++) labels.push(`id${id}`);
  return labels.reverse();
}

test('mulberry32 is seeded: same seed same stream, other seed another, values in [0, 1)', (t) => {
  const a = mulberry32(42);
  const b = mulberry32(42);
  const c = mulberry32(43);
  const sa = Array.from({ length: 100 }, a);
  t.deepEqual(sa, Array.from({ length: 100 }, b));
  t.notDeepEqual(sa, Array.from({ length: 100 }, c));
  t.true(sa.every((x) => x >= 0 && x < 1));
});

test('every batch holds P distinct identities x K images, K consecutive per identity', (t) => {
  const labels = unevenLabels();
  const sampler = createPKSampler(labels, { p: 4, k: 3, seed: 5 });
  t.is(sampler.p, 4);
  t.is(sampler.batchesPerEpoch, Math.ceil(labels.length / 12));

  for (let e = 0; e < 3; e++) {
    const batches = sampler.epoch();
    t.is(batches.length, sampler.batchesPerEpoch);
    for (const batch of batches) {
      t.is(batch.length, 12);
      const groups = [0, 1, 2, 3].map((g) => batch.slice(g * 3, g * 3 + 3).map((i) => labels[i]));
      for (const group of groups) t.true(group.every((label) => label === group[0]));
      t.is(new Set(groups.map((g) => g[0])).size, 4);
    }
  }
});

test('an epoch sees about every face once', (t) => {
  const labels = unevenLabels();
  const sampler = createPKSampler(labels, { p: 4, k: 3, seed: 9 });
  const seen = new Set(sampler.epoch().flat());
  // Padding and completion draw again, so not every face is certain; most must be there.
  t.true(seen.size >= 0.8 * labels.length, `${seen.size} of ${labels.length}`);
});

test('identities with fewer than K faces are padded from their own faces', (t) => {
  const labels = ['a', 'b', 'b', 'c', 'c', 'c'];
  const sampler = createPKSampler(labels, { p: 3, k: 4, seed: 1 });
  for (const batch of sampler.epoch()) {
    t.is(batch.length, 12);
    const aSlot = [0, 1, 2].find((g) => labels[batch[g * 4]] === 'a')!;
    t.deepEqual(batch.slice(aSlot * 4, aSlot * 4 + 4), [0, 0, 0, 0]);
  }
});

test('P is capped by the number of identities', (t) => {
  const sampler = createPKSampler([0, 0, 1, 1, 2, 2], { p: 16, k: 2, seed: 1 });
  t.is(sampler.p, 3);
  t.is(sampler.epoch()[0].length, 6);
});

test('deterministic with the same seed, different with another', (t) => {
  const labels = unevenLabels();
  const run = (seed: number) => {
    const sampler = createPKSampler(labels, { p: 4, k: 3, seed });
    return [sampler.epoch(), sampler.epoch()];
  };
  t.deepEqual(run(3), run(3));
  t.notDeepEqual(run(3), run(4));
  const [first, second] = run(3);
  t.notDeepEqual(first, second, 'successive epochs differ');
});

test('bad options and empty labels are invalid_argument', (t) => {
  t.throws(() => createPKSampler([], {}), { message: /at least one face/ });
  t.throws(() => createPKSampler([1, 2], { k: 0 }), { message: /positive integers/ });
  t.throws(() => createPKSampler([1, 2], { p: 1.5 }), { message: /positive integers/ });
});
