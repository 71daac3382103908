import { createHash } from 'node:crypto';

import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import { auditRowsToCsv, canonicalJson, GENESIS_HASH } from '../../src/policy/audit.ts';
import type { Deployment } from '../../src/policy/deployment.ts';
import type { AuditRow } from '../../src/policy/types.ts';
import { manualClock, rawConnection, ref, tempDeployment, thrownMessage } from './fixtures.ts';

/** Appends `count` search rows with a count in their details. */
function appendRows(deployment: Deployment, count: number): AuditRow[] {
  const rows: AuditRow[] = [];
  for (let i = 0; i < count; i++) {
    rows.push(
      deployment.audit.append({
        actor: 'key:k_0123456789ab',
        action: 'search',
        identityRef: i % 2 === 0 ? ref(i) : null,
        details: { results: i, outcome: 'match', params: { k: 5, threshold: 0.4 } },
      }),
    );
  }
  return rows;
}

test('appended rows form a chain that verifies, with the head hash of the last row', (t) => {
  const clock = manualClock();
  const { deployment } = tempDeployment(t, { now: clock.now });
  t.deepEqual(deployment.audit.verify(), { ok: true, rows: 0, head: null });

  const rows = appendRows(deployment, 5);
  t.deepEqual(
    rows.map((row) => row.seq),
    [1, 2, 3, 4, 5],
  );
  t.is(rows[0]!.prevHash, GENESIS_HASH);
  for (let i = 1; i < rows.length; i++) t.is(rows[i]!.prevHash, rows[i - 1]!.hash);

  // The hash is the one the documentation gives, so an officer can check it independently.
  const first = rows[0]!;
  const content = canonicalJson([
    1,
    '2025-01-01T00:00:00.000Z',
    'key:k_0123456789ab',
    'search',
    ref(0),
    { outcome: 'match', params: { k: 5, threshold: 0.4 }, results: 0 },
  ]);
  const expected = createHash('sha256')
    .update(GENESIS_HASH + '\n' + content)
    .digest('hex');
  t.is(first.hash, expected);

  t.deepEqual(deployment.audit.verify(), { ok: true, rows: 5, head: rows[4]!.hash });
  t.deepEqual(deployment.audit.rows(), rows);
  t.notThrows(() => deployment.audit.assertIntact());
});

test('canonicalJson sorts keys recursively, so key order does not change the hash', (t) => {
  t.is(
    canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } }),
    '{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}',
  );

  const clock = manualClock();
  const one = tempDeployment(t, { now: clock.now }).deployment;
  const two = tempDeployment(t, { now: clock.now }).deployment;
  const a = one.audit.append({ actor: 'cli:root', action: 'read', details: { x: 1, y: 2 } });
  const b = two.audit.append({ actor: 'cli:root', action: 'read', details: { y: 2, x: 1 } });
  t.is(a.hash, b.hash);
});

test('a past row edited behind the triggers is named by verify', (t) => {
  const { dir, deployment } = tempDeployment(t);
  appendRows(deployment, 10);

  const raw = rawConnection(t, dir);
  raw.exec('DROP TRIGGER audit_log_no_update');
  raw.prepare(`UPDATE audit_log SET details = '{"results":999}' WHERE seq = 7`).run();

  const result = deployment.audit.verify();
  t.false(result.ok);
  t.is(result.rows, 10);
  t.is(result.firstBad?.seq, 7);
  t.is(
    result.firstBad?.reason,
    'row 7: its hash does not match its content (edited after it was written)',
  );

  const error = t.throws(() => deployment.audit.assertIntact(), { instanceOf: ReidbError });
  t.is(error?.code, 'audit_tampered');
  t.regex(error!.message, /row 7/);
});

test('an edit whose hash was recomputed is found at the next row', (t) => {
  const { dir, deployment } = tempDeployment(t);
  const rows = appendRows(deployment, 6);

  const raw = rawConnection(t, dir);
  raw.exec('DROP TRIGGER audit_log_no_update');
  const forged = { ...rows[3]!, actor: 'cli:someone-else' };
  const content = canonicalJson([
    forged.seq,
    forged.at,
    forged.actor,
    forged.action,
    forged.identityRef,
    forged.details,
  ]);
  const hash = createHash('sha256')
    .update(forged.prevHash + '\n' + content)
    .digest('hex');
  raw.prepare('UPDATE audit_log SET actor = ?, hash = ? WHERE seq = 4').run(forged.actor, hash);

  const result = deployment.audit.verify();
  t.false(result.ok);
  t.is(result.firstBad?.seq, 5);
  t.regex(result.firstBad!.reason, /^row 5: its prev_hash is not the hash of row 4/);
});

test('a removed row is named by verify', (t) => {
  const { dir, deployment } = tempDeployment(t);
  appendRows(deployment, 8);

  const raw = rawConnection(t, dir);
  raw.exec('DROP TRIGGER audit_log_no_delete');
  raw.prepare('DELETE FROM audit_log WHERE seq = 5').run();

  const result = deployment.audit.verify();
  t.false(result.ok);
  t.is(result.rows, 7);
  t.is(result.firstBad?.seq, 5);
  t.regex(result.firstBad!.reason, /^row 5 is missing: the trail jumps from row 4 to row 6/);
});

test('removing the first row is named too', (t) => {
  const { dir, deployment } = tempDeployment(t);
  appendRows(deployment, 3);

  const raw = rawConnection(t, dir);
  raw.exec('DROP TRIGGER audit_log_no_delete');
  raw.prepare('DELETE FROM audit_log WHERE seq = 1').run();

  const result = deployment.audit.verify();
  t.is(result.firstBad?.seq, 1);
  t.regex(result.firstBad!.reason, /^row 1 is missing/);
});

test('the triggers refuse UPDATE, DELETE and a replacing INSERT', (t) => {
  const { dir, deployment } = tempDeployment(t);
  const rows = appendRows(deployment, 3);
  const raw = rawConnection(t, dir);

  t.regex(
    thrownMessage(t, () => raw.prepare("UPDATE audit_log SET actor = 'x' WHERE seq = 2").run()),
    /append-only: rows cannot be changed/,
  );
  t.regex(
    thrownMessage(t, () => raw.prepare('DELETE FROM audit_log WHERE seq = 2').run()),
    /append-only: rows cannot be deleted/,
  );
  t.regex(
    thrownMessage(t, () => raw.prepare('DELETE FROM audit_log').run()),
    /append-only: rows cannot be deleted/,
  );
  t.regex(
    thrownMessage(t, () =>
      raw
        .prepare(
          `INSERT OR REPLACE INTO audit_log (seq, at, actor, action, identity_ref, details,
             prev_hash, hash) VALUES (2, 'x', 'x', 'read', NULL, '{}', ?, ?)`,
        )
        .run(GENESIS_HASH, GENESIS_HASH),
    ),
    /seq must be the last seq \+ 1/,
  );

  t.deepEqual(deployment.audit.rows(), rows, 'nothing changed');
  t.true(deployment.audit.verify().ok);
});

test('append refuses biometric-looking and non-JSON details', (t) => {
  const { deployment } = tempDeployment(t);
  const append = (details: unknown) => () =>
    deployment.audit.append({
      actor: 'cli:root',
      action: 'search',
      details: details as Record<string, unknown>,
    });
  const refused = (details: unknown, message: RegExp) => {
    const error = t.throws(append(details), { instanceOf: ReidbError });
    t.is(error?.code, 'invalid_argument');
    t.is(error?.input, 'details');
    t.regex(error!.message, message);
  };

  refused({ probe: new Float32Array(128) }, /binary data \(Float32Array\) at details\.probe/);
  refused({ image: Buffer.from('jpeg') }, /binary data/);
  refused({ raw: new Uint8Array(4).buffer }, /binary data/);
  refused({ vector: Array.from({ length: 65 }, (_, i) => i / 100) }, /array of 65 numbers/);
  refused({ nested: { rows: [Array(40).fill(0.1), Array(40).fill(0.2)] } }, /array of 80 numbers/);
  refused({ when: new Date() }, /Date object/);
  refused({ missing: undefined }, /undefined/);
  refused({ ratio: Number.NaN }, /non-finite/);
  refused({ big: 1n }, /bigint/);
  refused([1, 2], /plain object/);
  const loop: Record<string, unknown> = {};
  loop.self = loop;
  refused(loop, /deeper than 16/);
  refused({ text: 'x'.repeat(70_000) }, /at most 65536/);

  t.is(deployment.audit.rows().length, 0, 'nothing was written');
  t.notThrows(append({ scores: Array(64).fill(0.5), labels: Array(100).fill('a') }));
});

test('append refuses an identity label, an unknown action and a bad actor', (t) => {
  const { deployment } = tempDeployment(t);
  const code = (run: () => unknown) => t.throws(run, { instanceOf: ReidbError });

  const label = code(() =>
    deployment.audit.append({ actor: 'cli:root', action: 'erase', identityRef: 'alice' }),
  );
  t.is(label?.code, 'invalid_argument');
  t.is(label?.input, 'identityRef');

  const action = code(() =>
    deployment.audit.append({ actor: 'cli:root', action: 'delete_everything' as 'erase' }),
  );
  t.is(action?.input, 'action');

  t.is(code(() => deployment.audit.append({ actor: '', action: 'read' }))?.input, 'actor');
  t.is(code(() => deployment.audit.append({ actor: 'a\nb', action: 'read' }))?.input, 'actor');
  t.is(deployment.audit.rows().length, 0);

  const ok = deployment.audit.append({
    actor: 'cli:root',
    action: 'erase',
    identityRef: deployment.identityRef('alice'),
  });
  t.regex(ok.identityRef!, /^ref_[0-9a-f]{24}$/);
  t.deepEqual(ok.details, {});
});

test('rows filters by identity, from a seq, up to a limit', (t) => {
  const { deployment } = tempDeployment(t);
  appendRows(deployment, 10);

  t.deepEqual(
    deployment.audit.rows({ identityRef: ref(4) }).map((row) => row.seq),
    [5],
  );
  t.deepEqual(
    deployment.audit.rows({ fromSeq: 8 }).map((row) => row.seq),
    [8, 9, 10],
  );
  t.deepEqual(
    deployment.audit.rows({ fromSeq: 2, limit: 3 }).map((row) => row.seq),
    [2, 3, 4],
  );
  t.deepEqual(deployment.audit.rows({ identityRef: ref(999) }), []);

  const error = t.throws(() => deployment.audit.rows({ limit: 0 }), { instanceOf: ReidbError });
  t.is(error?.input, 'limit');
  t.is(t.throws(() => deployment.audit.rows({ fromSeq: 1.5 }))?.message.includes('fromSeq'), true);
});

test('CSV quotes per RFC 4180 and defuses spreadsheet formulas', (t) => {
  const row: AuditRow = {
    seq: 3,
    at: '2025-01-01T00:00:00.000Z',
    actor: 'cli:o"brien, jr',
    action: 'audit_export',
    identityRef: null,
    details: { note: 'line\nbreak', b: '=x' },
    prevHash: 'a'.repeat(64),
    hash: 'b'.repeat(64),
  };
  const formulas = ['=HYPERLINK("http://x")', '+1', '-2', '@SUM(A1)'].map((actor, i) => ({
    ...row,
    seq: 4 + i,
    actor,
    identityRef: ref(i),
    details: {},
  }));

  const csv = auditRowsToCsv([row, ...formulas]);
  const lines = csv.split('\r\n');
  t.is(lines[0], 'seq,at,actor,action,identity_ref,details,prev_hash,hash');
  t.is(
    lines[1],
    `3,2025-01-01T00:00:00.000Z,"cli:o""brien, jr",audit_export,,` +
      `"{""b"":""=x"",""note"":""line\\nbreak""}",${'a'.repeat(64)},${'b'.repeat(64)}`,
  );
  t.is(lines[2]!.split(',')[2], `"'=HYPERLINK(""http://x"")"`);
  t.is(lines[3]!.split(',')[2], "'+1");
  t.is(lines[4]!.split(',')[2], "'-2");
  t.is(lines[5]!.split(',')[2], "'@SUM(A1)");
  t.is(lines[6], '', 'the file ends with CRLF');
  t.is(lines.length, 7);

  const { deployment } = tempDeployment(t);
  t.is(deployment.audit.toCsv([row]), auditRowsToCsv([row]));
});

test('a cell with a real line break stays one quoted CSV field', (t) => {
  const csv = auditRowsToCsv([
    {
      seq: 1,
      at: 'now',
      actor: 'x\r\ny',
      action: 'read',
      identityRef: null,
      details: {},
      prevHash: GENESIS_HASH,
      hash: GENESIS_HASH,
    },
  ]);
  t.true(csv.includes(',"x\r\ny",'));
});

test("an identity's rows include the searches that returned it", (t) => {
  const { deployment } = tempDeployment(t);
  const ana = ref(1);
  const bo = ref(2);
  deployment.audit.append({ actor: 'cli:x', action: 'enrol', identityRef: ana, details: {} });
  deployment.audit.append({
    actor: 'key:k_0123456789ab',
    action: 'search',
    details: { faces: 1, matchedRefs: [bo, ana] },
  });
  deployment.audit.append({
    actor: 'key:k_0123456789ab',
    action: 'search',
    details: { faces: 1, matchedRefs: [bo] },
  });
  // Only a search's matchedRefs count: another action's details never name an identity.
  deployment.audit.append({ actor: 'cli:x', action: 'list', details: { matchedRefs: [ana] } });

  t.deepEqual(
    deployment.audit.rows({ identityRef: ana }).map((row) => row.seq),
    [1, 2],
  );
  t.deepEqual(
    deployment.audit.rows({ identityRef: bo }).map((row) => row.seq),
    [2, 3],
  );
});

test('details spelled differently from how they were hashed are an edit', (t) => {
  const { deployment, dir } = tempDeployment(t);
  deployment.audit.append({
    actor: 'key:k_0123456789ab',
    action: 'key_create',
    details: { keyId: 'k_0123456789ab', roles: ['read'] },
  });
  deployment.audit.append({ actor: 'cli:x', action: 'list' });
  t.true(deployment.audit.verify().ok);

  // The same JSON.parse result, but SQLite's json_extract reads the first keyId.
  const forged = '{"keyId":"k_000000000000","keyId":"k_0123456789ab","roles":["read"]}';
  const raw = rawConnection(t, dir);
  raw.exec('DROP TRIGGER audit_log_no_update');
  raw.prepare('UPDATE audit_log SET details = ? WHERE seq = 1').run(forged);
  const result = deployment.audit.verify();
  t.false(result.ok);
  t.is(result.firstBad?.seq, 1);
  t.regex(result.firstBad!.reason, /not stored as they were hashed/);
});
