import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { createApp, listen } from '../../src/api/server.ts';
import { openGallery } from '../../src/gallery/gallery.ts';
import { fakeEngine } from '../helpers/fake-engine.ts';

test('an erasure acknowledged while an enrolment is still uploading wins over it', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-fence-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gallery = await openGallery(dir);
  t.teardown(() => gallery.close());
  const engine = fakeEngine();
  const server = await listen(createApp({ engine, gallery }), 0, '127.0.0.1');
  t.teardown(() => server.close());
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const base = `http://127.0.0.1:${port}`;
  const body = new Uint8Array(4096).fill(7);
  const enrol = () =>
    fetch(`${base}/v1/identities/ana/faces`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'image/jpeg' },
    });

  t.is((await enrol()).status, 201);

  // A second enrolment sends half its body, then waits while the erasure is acknowledged.
  const slow = new Promise<{ status: number; code?: string }>((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/identities/ana/faces',
        headers: { 'content-type': 'image/jpeg', 'content-length': body.length },
      },
      (res) => {
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, code: JSON.parse(text).error?.code }),
        );
      },
    );
    req.on('error', reject);
    req.write(body.subarray(0, 2048));
    setTimeout(() => req.end(body.subarray(2048)), 600);
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const erased = await fetch(`${base}/v1/identities/ana`, { method: 'DELETE' });
  t.is(erased.status, 200);

  t.deepEqual(await slow, { status: 409, code: 'conflict' });
  t.is((await fetch(`${base}/v1/identities/ana`)).status, 404, 'the erasure stands');

  // An enrolment sent after the erasure enrols the person anew.
  t.is((await enrol()).status, 201);
});
