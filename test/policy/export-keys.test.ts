import test from 'ava';

import { ReidbError } from '../../src/errors.ts';
import type { SealedRecord } from '../../src/policy/export-keys.ts';
import { deploymentBytes, rawConnection, ref, tempDeployment } from './fixtures.ts';

const PLAIN = Buffer.from(JSON.stringify({ identity: 'alice', faces: [1, 2, 3] }));

function exportInvalid(t: import('ava').ExecutionContext, run: () => unknown): ReidbError {
  const error = t.throws(run, { instanceOf: ReidbError });
  t.is(error?.code, 'export_invalid');
  return error!;
}

/** A copy of `text` (base64) with one bit of its first byte flipped. */
function flipBit(text: string): string {
  const bytes = Buffer.from(text, 'base64');
  bytes[0]! ^= 1;
  return bytes.toString('base64');
}

test('a sealed record opens to its plaintext, with one key per identity', (t) => {
  const { deployment } = tempDeployment(t);

  const sealed = deployment.exportKeys.seal(ref(1), PLAIN);
  t.regex(sealed.keyId, /^ek_[0-9a-f]{16}$/);
  t.is(Buffer.from(sealed.iv, 'base64').length, 12);
  t.is(Buffer.from(sealed.tag, 'base64').length, 16);
  t.false(Buffer.from(sealed.data, 'base64').includes(Buffer.from('alice')));
  t.deepEqual(deployment.exportKeys.open(sealed), PLAIN);

  const again = deployment.exportKeys.seal(ref(1), PLAIN);
  t.is(again.keyId, sealed.keyId);
  t.not(again.iv, sealed.iv, 'a fresh iv every time');
  t.not(deployment.exportKeys.seal(ref(2), PLAIN).keyId, sealed.keyId);
  t.deepEqual(deployment.exportKeys.keyFor(ref(1)).keyId, sealed.keyId);
  t.is(deployment.exportKeys.keyFor(ref(1)).key.length, 32);
});

test('destroying the key makes earlier records unreadable and shreds its bytes', (t) => {
  const { dir, deployment } = tempDeployment(t);
  const sealed = deployment.exportKeys.seal(ref(1), PLAIN);
  const other = deployment.exportKeys.seal(ref(2), PLAIN);
  const { key } = deployment.exportKeys.keyFor(ref(1));
  deployment.checkpointTruncate();
  t.true(deploymentBytes(dir).includes(key), 'the scan finds the key while it exists');

  t.true(deployment.exportKeys.destroy(ref(1)));
  deployment.checkpointTruncate();

  t.is(deployment.exportKeys.open(sealed), null);
  t.deepEqual(deployment.exportKeys.open(other), PLAIN, 'other identities are untouched');
  t.false(deploymentBytes(dir).includes(key), 'no copy of the key in any file');
  t.false(deployment.exportKeys.destroy(ref(1)), 'nothing left to destroy');

  const fresh = deployment.exportKeys.seal(ref(1), PLAIN);
  t.not(fresh.keyId, sealed.keyId, 'a new export gets a new key');
  t.is(deployment.exportKeys.open(sealed), null);
});

test('a tampered record is export_invalid', (t) => {
  const { deployment } = tempDeployment(t);
  const sealed = deployment.exportKeys.seal(ref(1), PLAIN);

  const data = exportInvalid(t, () =>
    deployment.exportKeys.open({ ...sealed, data: flipBit(sealed.data) }),
  );
  t.is(data.input, sealed.keyId);
  exportInvalid(t, () => deployment.exportKeys.open({ ...sealed, tag: flipBit(sealed.tag) }));
  exportInvalid(t, () => deployment.exportKeys.open({ ...sealed, iv: flipBit(sealed.iv) }));

  const otherKey = deployment.exportKeys.seal(ref(2), PLAIN).keyId;
  exportInvalid(t, () => deployment.exportKeys.open({ ...sealed, keyId: otherKey }));

  t.is(exportInvalid(t, () => deployment.exportKeys.open({ ...sealed, iv: 'AAAA' })).input, 'iv');
  t.is(
    exportInvalid(t, () => deployment.exportKeys.open({ ...sealed, data: 'no base64!' })).input,
    'data',
  );
  t.is(
    exportInvalid(t, () => deployment.exportKeys.open({ ...sealed, keyId: 'x' })).input,
    'keyId',
  );
  exportInvalid(t, () => deployment.exportKeys.open(null as unknown as SealedRecord));

  t.deepEqual(deployment.exportKeys.open(sealed), PLAIN, 'the untouched record still opens');
});

test("another deployment can't open a record, even with a copy of the key", (t) => {
  const a = tempDeployment(t);
  const b = tempDeployment(t);
  t.not(a.deployment.id, b.deployment.id);
  const sealed = a.deployment.exportKeys.seal(ref(1), PLAIN);

  t.is(b.deployment.exportKeys.open(sealed), null, 'B has no key of that id');

  // Copying the key row into B is not enough: the record is bound to A's deployment id.
  const row = rawConnection(t, a.dir)
    .prepare('SELECT key_id, identity_ref, key, created_at FROM export_keys')
    .get() as { key_id: string; identity_ref: string; key: Buffer; created_at: string };
  rawConnection(t, b.dir)
    .prepare('INSERT INTO export_keys (key_id, identity_ref, key, created_at) VALUES (?, ?, ?, ?)')
    .run(row.key_id, row.identity_ref, row.key, row.created_at);
  exportInvalid(t, () => b.deployment.exportKeys.open(sealed));

  t.deepEqual(a.deployment.exportKeys.open(sealed), PLAIN);
});

test('export keys refuse an identity label in place of a reference', (t) => {
  const { deployment } = tempDeployment(t);

  const error = t.throws(() => deployment.exportKeys.keyFor('alice'), { instanceOf: ReidbError });
  t.is(error?.code, 'invalid_argument');
  t.is(error?.input, 'identityRef');
  t.is(deployment.exportKeys.seal(deployment.identityRef('alice'), PLAIN).keyId.length, 19);
});
