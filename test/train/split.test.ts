import test from 'ava';

import { splitByIdentity } from '../../src/train/split.ts';

/** 20 identities with 3 faces each, plus 4 identities with a single face. */
function faces(): { identity: string }[] {
  const out: { identity: string }[] = [];
  for (let id = 0; id < 20; id++) for (let f = 0; f < 3; f++) out.push({ identity: `p${id}` });
  for (let id = 0; id < 4; id++) out.push({ identity: `single${id}` });
  return out;
}

test('identities, never faces, are split; every face lands on its identity side', (t) => {
  const all = faces();
  const split = splitByIdentity(all, 0.25, 1);
  t.is(split.valIdentities.length, 6);
  const val = new Set(split.valIdentities);
  const train = new Set(split.trainIdentities);
  t.true([...val].every((identity) => !train.has(identity)));
  t.true(split.val.every((i) => val.has(all[i].identity)));
  t.true(split.train.every((i) => train.has(all[i].identity)));
  for (const identity of val) {
    const count = all.filter((f) => f.identity === identity).length;
    t.is(split.val.filter((i) => all[i].identity === identity).length, count);
  }
});

test('single-face identities are dropped from training, kept in validation', (t) => {
  const all = faces();
  const split = splitByIdentity(all, 0.25, 1);
  t.true(split.trainIdentities.every((identity) => !identity.startsWith('single')));
  const singlesInVal = split.valIdentities.filter((identity) => identity.startsWith('single'));
  t.is(singlesInVal.length + split.droppedIdentities.length, 4);
  t.true(split.droppedIdentities.every((identity) => identity.startsWith('single')));
  t.is(split.train.length + split.val.length, all.length - split.droppedIdentities.length);
});

test('seeded: same seed same split, independent of face order; other seed other split', (t) => {
  const all = faces();
  const a = splitByIdentity(all, 0.25, 7);
  const reversed = splitByIdentity([...all].reverse(), 0.25, 7);
  t.deepEqual(a.valIdentities, reversed.valIdentities);
  t.deepEqual(a, splitByIdentity(all, 0.25, 7));
  t.notDeepEqual(a.valIdentities, splitByIdentity(all, 0.25, 8).valIdentities);
});

test('at least one identity each side; valShare 0 keeps everything for training', (t) => {
  const two = [{ identity: 'a' }, { identity: 'a' }, { identity: 'b' }, { identity: 'b' }];
  const split = splitByIdentity(two, 0.01, 1);
  t.is(split.valIdentities.length, 1);
  t.is(split.trainIdentities.length, 1);
  t.is(splitByIdentity(two, 0, 1).valIdentities.length, 0);
  t.throws(() => splitByIdentity(two, 1, 1), { message: /valShare/ });
  t.throws(() => splitByIdentity(two, -0.1, 1), { message: /valShare/ });
});
