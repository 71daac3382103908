import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import { manualClock, rawConnection, ref, tempDeployment, thrownMessage } from './fixtures.ts';

test('record keeps one row per face uid, grouped into entries by identity and time', (t) => {
  const clock = manualClock();
  const { deployment } = tempDeployment(t, { now: clock.now });

  deployment.ledger.record({
    identityRef: ref(1),
    faceUids: ['u3', 'u1', 'u2'],
    reason: 'erase',
    actor: 'key:k_0123456789ab',
  });
  clock.advance(60_000);
  deployment.ledger.record({
    identityRef: ref(2),
    faceUids: ['u4'],
    reason: 'retention',
    actor: 'system:retention',
  });
  deployment.ledger.record({
    identityRef: ref(1),
    faceUids: ['u5'],
    reason: 'retention',
    actor: 'system:retention',
    erasedAt: '2025-02-01T00:00:00.000Z',
  });

  t.deepEqual(deployment.ledger.entries(), [
    {
      identityRef: ref(1),
      faceUids: ['u1', 'u2', 'u3'],
      erasedAt: '2025-01-01T00:00:00.000Z',
      reason: 'erase',
      actor: 'key:k_0123456789ab',
    },
    {
      identityRef: ref(2),
      faceUids: ['u4'],
      erasedAt: '2025-01-01T00:01:00.000Z',
      reason: 'retention',
      actor: 'system:retention',
    },
    {
      identityRef: ref(1),
      faceUids: ['u5'],
      erasedAt: '2025-02-01T00:00:00.000Z',
      reason: 'retention',
      actor: 'system:retention',
    },
  ]);
  t.deepEqual(deployment.ledger.counts(), { faces: 5, identities: 2 });
});

test('recording the same erasure twice is harmless and keeps the first row', (t) => {
  const clock = manualClock();
  const { deployment } = tempDeployment(t, { now: clock.now });
  const entry = {
    identityRef: ref(7),
    faceUids: ['a', 'b'],
    reason: 'erase' as const,
    actor: 'cli:x',
  };

  deployment.ledger.record(entry);
  clock.advance(5_000);
  deployment.ledger.record(entry);
  deployment.ledger.record({ ...entry, faceUids: ['b', 'c'] });

  t.deepEqual(deployment.ledger.counts(), { faces: 3, identities: 1 });
  const entries = deployment.ledger.entries();
  t.is(entries.length, 2);
  t.deepEqual(entries[0]!.faceUids, ['a', 'b']);
  t.is(entries[0]!.erasedAt, '2025-01-01T00:00:00.000Z');
  t.deepEqual(entries[1]!.faceUids, ['c']);
});

test('erasedAmong finds exactly the erased uids among 50 000', (t) => {
  const { deployment } = tempDeployment(t);
  const erased: string[] = [];
  for (let i = 0; i < 2_000; i++) erased.push(`face-${i * 25}`);
  for (let i = 0; i < erased.length; i += 100) {
    deployment.ledger.record({
      identityRef: ref(i),
      faceUids: erased.slice(i, i + 100),
      reason: 'retention',
      actor: 'system:retention',
    });
  }

  // 50 000 probes: every 25th is erased, plus duplicates and uids never seen.
  const probes = Array.from({ length: 50_000 }, (_, i) => `face-${i}`);
  probes.push('face-0', 'face-25', 'never-enrolled');
  const started = performance.now();
  const found = deployment.ledger.erasedAmong(probes);
  const elapsedMs = performance.now() - started;

  t.is(found.size, 2_000);
  t.deepEqual([...found].sort(), [...erased].sort());
  t.false(found.has('face-1'));
  t.true(elapsedMs < 5_000, `took ${elapsedMs.toFixed(0)} ms`);

  t.deepEqual(deployment.ledger.erasedAmong([]), new Set());
  t.deepEqual(deployment.ledger.erasedAmong(['face-50', 'face-51']), new Set(['face-50']));
});

test('record refuses an identity label, a bad reason and bad uids, writing nothing', (t) => {
  const { deployment } = tempDeployment(t);
  const base = { identityRef: ref(1), faceUids: ['u1'], reason: 'erase' as const, actor: 'cli:x' };
  const input = (entry: Record<string, unknown>) =>
    t.throws(() => deployment.ledger.record({ ...base, ...entry }), { instanceOf: ReidbError })
      ?.input;

  t.is(input({ identityRef: 'alice' }), 'identityRef');
  t.is(input({ reason: 'forgot' }), 'reason');
  t.is(input({ faceUids: ['u2', ''] }), 'faceUids[1]');
  t.is(input({ faceUids: 'u1' }), 'faceUids');
  t.is(input({ actor: '' }), 'actor');
  t.is(input({ erasedAt: 'yesterday' }), 'erasedAt');

  t.deepEqual(deployment.ledger.counts(), { faces: 0, identities: 0 });
});

test('ledger rows cannot be changed or removed', (t) => {
  const { dir, deployment } = tempDeployment(t);
  deployment.ledger.record({ identityRef: ref(1), faceUids: ['u1'], reason: 'erase', actor: 'x' });
  const raw = rawConnection(t, dir);

  t.regex(
    thrownMessage(t, () => raw.prepare('DELETE FROM erasure_ledger').run()),
    /cannot be deleted/,
  );
  t.regex(
    thrownMessage(t, () => raw.prepare("UPDATE erasure_ledger SET face_uid = 'u9'").run()),
    /cannot be changed/,
  );
  t.deepEqual(deployment.ledger.erasedAmong(['u1', 'u9']), new Set(['u1']));
});
