import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';
import type { NextFunction, Request, Response } from 'express';

import { createRateLimit } from '../../src/api/rate-limit.ts';
import { createApp, listen } from '../../src/api/server.ts';
import { openGallery } from '../../src/gallery/gallery.ts';
import { fakeEngine } from '../helpers/fake-engine.ts';

/** Runs the limiter once for `actor`; returns the error code it passed on, or 'ok'. */
function call(limit: ReturnType<typeof createRateLimit>, actor: string): string {
  let outcome = 'none';
  const req = { socket: { remoteAddress: '127.0.0.1' } } as Request;
  const res = { locals: { actor, key: null } } as unknown as Response;
  const next: NextFunction = (error?: unknown) => {
    outcome = error ? (error as { code: string }).code : 'ok';
  };
  limit(req, res, next);
  return outcome;
}

test('the bucket allows a burst, then refills at the rate', (t) => {
  let clock = 0;
  const limit = createRateLimit({ perSecond: 10, burst: 5, now: () => clock });
  const first = Array.from({ length: 7 }, () => call(limit, 'key:k_a'));
  t.deepEqual(first, ['ok', 'ok', 'ok', 'ok', 'ok', 'rate_limited', 'rate_limited']);
  t.is(call(limit, 'key:k_b'), 'ok', 'another key has its own bucket');

  clock += 250; // 2.5 tokens back
  t.deepEqual(
    Array.from({ length: 3 }, () => call(limit, 'key:k_a')),
    ['ok', 'ok', 'rate_limited'],
  );
  clock += 60_000; // refills to the burst, not beyond
  t.is(Array.from({ length: 8 }, () => call(limit, 'key:k_a')).filter((o) => o === 'ok').length, 5);
});

test('bad limits are refused', (t) => {
  t.throws(() => createRateLimit({ perSecond: 0, burst: 5 }), { message: /perSecond/ });
  t.throws(() => createRateLimit({ perSecond: 5, burst: 0 }), { message: /burst/ });
});

test('a flood from one key gets 429 with Retry-After past its burst; others still served', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-rate-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gallery = await openGallery(dir);
  t.teardown(() => gallery.close());
  const flooder = gallery.deployment.keys.create({ roles: ['search', 'enrol'] });
  const other = gallery.deployment.keys.create({ roles: ['read'] });

  const engine = fakeEngine();
  const app = createApp({
    engine,
    gallery,
    maxQueued: 1000,
    rateLimit: { perSecond: 1, burst: 20 },
  });
  const server = await listen(app, 0, '127.0.0.1');
  t.teardown(() => server.close());
  const address = server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  const post = (url: string, key: string) =>
    fetch(base + url, {
      method: 'POST',
      body: new Uint8Array([1, 2, 3]),
      headers: { 'content-type': 'image/jpeg', authorization: `Bearer ${key}` },
    });

  const enrolled = await post('/v1/identities/someone/faces', flooder.key);
  t.is(enrolled.status, 201);

  const answers = await Promise.all(
    Array.from({ length: 60 }, async () => {
      const res = await post('/v1/search', flooder.key);
      const body = (await res.json()) as { error?: { code: string } };
      return { status: res.status, code: body.error?.code, retry: res.headers.get('retry-after') };
    }),
  );
  const served = answers.filter((a) => a.status === 200).length;
  const limited = answers.filter((a) => a.status === 429);
  t.is(served, 19, 'the burst of 20, less the enrolment');
  t.is(limited.length, 41);
  t.true(limited.every((a) => a.code === 'rate_limited' && Number(a.retry) >= 1));

  const read = await fetch(`${base}/v1/identities/someone`, {
    headers: { authorization: `Bearer ${other.key}` },
  });
  t.is(read.status, 200, 'another key is not limited by the flood');
  const wrong = await fetch(`${base}/v1/search`, {
    method: 'POST',
    headers: { authorization: 'Bearer reidb_k_000000000000_nope' },
  });
  t.is(wrong.status, 401, 'a bad key is refused before the limit, and costs no token');
});
