import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { createApp, listen, shutDown } from '../../src/api/server.ts';
import type { Engine } from '../../src/engine/pool.ts';
import { openGallery } from '../../src/gallery/gallery.ts';
import { fakeEngine } from '../helpers/fake-engine.ts';

/** An engine whose every image holds one face (a new vector each time), found after `delayMs`. */
function slowEngine(delayMs: number): Engine {
  return fakeEngine({ delayMs });
}

test('shutDown lets running requests finish and refuses new ones', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-shutdown-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gallery = await openGallery(dir);
  t.teardown(() => gallery.close());
  const app = createApp({ engine: slowEngine(400), gallery });
  const server = await listen(app, 0, '127.0.0.1');
  const address = server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  const enrol = (id: string) =>
    fetch(`${base}/v1/identities/${id}/faces`, {
      method: 'POST',
      body: new Uint8Array([1, 2, 3]),
      headers: { 'content-type': 'image/jpeg' },
    });

  const running = [enrol('a'), enrol('b'), enrol('c')];
  await new Promise((resolve) => setTimeout(resolve, 100));
  const stopped = shutDown(server, app, 5000);

  const late = await enrol('late').then(
    (res) => `${res.status}`,
    () => 'refused',
  );
  t.is(late, 'refused', 'a new connection after the shutdown started is not accepted');

  const statuses = await Promise.all(running.map(async (r) => (await r).status));
  t.deepEqual(statuses, [201, 201, 201]);
  t.true(await stopped);
  t.deepEqual(
    gallery.listIdentities().map((i) => i.identity),
    ['a', 'b', 'c'],
  );
});
