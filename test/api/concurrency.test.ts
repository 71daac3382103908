import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

import test from 'ava';

import {
  lfwPeople,
  openLeftGallery,
  readContents,
  request,
  startServer,
  stopServer,
  type Answer,
} from '../helpers/child-server.ts';
import { hasData } from '../helpers/data.ts';
import { lfw } from '../helpers/images.ts';

// Enrolments, searches and erasures of disjoint identities from many clients at once against
// one real `reidb serve` child: the final gallery must be exactly what the acknowledged
// operations imply, and no search may return an identity whose erasure was acknowledged
// before the search was sent.

/** Parallel client loops. */
const CLIENTS = 8;

/** Identities owned by each client; the first ERASED_PER_CLIENT of them are erased. */
const PER_CLIENT = 3;
const ERASED_PER_CLIENT = 2;

/** One search answer with when it was sent (ms, performance.now()). */
interface SearchSeen {
  probe: string;
  sentAt: number;
  matches: { identity: string; faceId: number }[];
}

test('concurrent clients end in the state their acknowledged operations imply', async (t) => {
  if (!hasData(t)) return;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-concurrency-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const db = path.join(dir, 'gallery');
  const server = await startServer(db);
  t.teardown(() => stopServer(server, 'SIGKILL'));

  const people = lfwPeople(4).slice(100, 100 + CLIENTS * PER_CLIENT);
  const acked = new Map<string, number[]>();
  const erasedAt = new Map<string, number>();
  const searches: SearchSeen[] = [];
  const failures: string[] = [];

  const note = (what: string, res: Answer): void => {
    if (res.status >= 500) failures.push(`${what}: ${res.status} ${JSON.stringify(res.body)}`);
  };

  const search = async (probe: string, photo: number): Promise<SearchSeen> => {
    const sentAt = performance.now();
    const res = await request(server.base, 'POST', '/v1/search?k=10', lfw(probe, photo));
    note(`search ${probe}`, res);
    const matches = res.status === 200 ? res.body.faces.flatMap((f: any) => f.matches) : [];
    const seen = { probe, sentAt, matches };
    searches.push(seen);
    return seen;
  };

  // Each client: enrol its identities (2 photos each), search for each of them and for a
  // neighbour's, then erase some of its own and search for those again at once.
  const client = async (c: number): Promise<void> => {
    const own = people.slice(c * PER_CLIENT, (c + 1) * PER_CLIENT);
    const neighbour = people[(((c + 1) % CLIENTS) * PER_CLIENT) % people.length]!;

    for (const identity of own) {
      for (const photo of [1, 2]) {
        const res = await request(
          server.base,
          'POST',
          `/v1/identities/${identity}/faces`,
          lfw(identity, photo),
        );
        note(`enrol ${identity}`, res);
        if (res.status === 201) {
          acked.set(identity, [...(acked.get(identity) ?? []), res.body.enrolled[0].faceId]);
        }
      }
      await search(identity, 3);
      await search(neighbour, 4);
    }

    for (const identity of own.slice(0, ERASED_PER_CLIENT)) {
      const res = await request(server.base, 'DELETE', `/v1/identities/${identity}`);
      note(`erase ${identity}`, res);
      if (res.status === 200) {
        erasedAt.set(identity, performance.now());
        t.is(res.body.facesRemoved, acked.get(identity)?.length ?? 0, `${identity} faces removed`);
      } else {
        t.false(acked.has(identity), `erasure of enrolled ${identity} answered ${res.status}`);
      }
      const after = await search(identity, 1);
      t.false(
        after.matches.some((m) => m.identity === identity),
        `${identity} is not found right after its erasure`,
      );
      await search(neighbour, 3);
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));

  t.log(`${acked.size} identities enrolled, ${erasedAt.size} erased, ${searches.length} searches`);
  t.deepEqual(failures, [], 'no 5xx answers');
  t.true(acked.size >= people.length - 3, `${acked.size} of ${people.length} identities enrolled`);
  t.true(erasedAt.size >= CLIENTS, `${erasedAt.size} erasures acknowledged`);

  // No search sent after an acknowledged erasure returns the erased identity, and every
  // matched face is an acknowledged face of the identity it was returned for.
  const faceOwner = new Map([...acked].flatMap(([id, faces]) => faces.map((f) => [f, id])));
  for (const seen of searches) {
    for (const match of seen.matches) {
      const erased = erasedAt.get(match.identity);
      t.false(
        erased !== undefined && erased < seen.sentAt,
        `search for ${seen.probe} returned ${match.identity} after its erasure`,
      );
      t.is(faceOwner.get(match.faceId), match.identity, `face ${match.faceId} belongs to it`);
    }
  }

  // The final state, over HTTP: erased identities are gone, the others hold exactly their
  // acknowledged faces, and the index counts what SQLite holds.
  const expected = new Map(
    [...acked].filter(([id]) => !erasedAt.has(id)).map(([id, f]) => [id, f.sort((a, b) => a - b)]),
  );
  for (const identity of people) {
    const res = await request(server.base, 'GET', `/v1/identities/${identity}`);
    if (expected.has(identity)) {
      t.is(res.status, 200);
      const ids = res.body.faces.map((f: any) => f.faceId).sort((a: number, b: number) => a - b);
      t.deepEqual(ids, expected.get(identity), `${identity} holds its acknowledged faces`);
    } else {
      t.is(res.status, 404);
      t.is(res.body.error.code, 'identity_not_found');
    }
  }
  const health = await request(server.base, 'GET', '/v1/status');
  const total = [...expected.values()].reduce((n, f) => n + f.length, 0);
  t.is(health.body.gallery.faces, total);
  t.is(health.body.gallery.indexCount, total);

  // The same after a clean stop, read from the files: SQLite and the index agree exactly.
  await stopServer(server, 'SIGTERM');
  const gallery = await openLeftGallery(db);
  try {
    const contents = readContents(gallery);
    t.deepEqual(new Map([...contents.faces].sort()), new Map([...expected].sort()));
    t.deepEqual(contents.indexLabels, contents.faceIds);
    t.is(contents.stats.indexCount, total);
  } finally {
    gallery.close();
  }
});
