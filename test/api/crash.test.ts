import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import test, { type ExecutionContext } from 'ava';
import Database from 'better-sqlite3';
import hnswlib from 'hnswlib-node';

import type { Gallery } from '../../src/gallery/gallery.ts';
import {
  lfwPeople,
  openLeftGallery,
  pool,
  readContents,
  request,
  startServer,
  stopServer,
  type ChildServer,
  type GalleryContents,
} from '../helpers/child-server.ts';
import { hasData } from '../helpers/data.ts';
import { lfw } from '../helpers/images.ts';

// Crash safety of the HTTP server: SIGKILL a real `reidb serve` child in the middle of a
// batch, with requests still in flight, then check that every acknowledged write survived
// and that the HNSW index agrees with SQLite when the gallery is opened again.

/** Requests in flight at once during a batch. */
const IN_FLIGHT = 6;

/** Kills in the enrolment test, and acknowledgements between two kills. */
const KILLS = 3;
const ACKS_PER_KILL = 12;

/** One acknowledged (201) enrolment of one photo. */
interface Acked {
  identity: string;
  photo: number;
  faceId: number;
}

/** A fresh temporary folder whose gallery lives in `gallery/`; removed after the test. */
function galleryDir(t: ExecutionContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-crash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'gallery');
}

/** Starts a server and makes sure it is gone (SIGKILL by its PID) when the test ends. */
async function serve(t: ExecutionContext, db: string): Promise<ChildServer> {
  const server = await startServer(db);
  t.teardown(() => stopServer(server, 'SIGKILL'));
  return server;
}

/** Enrols one photo; returns the acknowledged face, or null (refused, failed or cut off). */
async function enrolPhoto(
  server: ChildServer,
  identity: string,
  photo: number,
): Promise<Acked | null> {
  try {
    const res = await request(
      server.base,
      'POST',
      `/v1/identities/${identity}/faces`,
      lfw(identity, photo),
    );
    if (res.status !== 201) return null;
    return { identity, photo, faceId: res.body.enrolled[0].faceId };
  } catch {
    return null;
  }
}

/**
 * Byte windows (32 bytes at the start and in the middle) of each face's stored vectors: the
 * appearance and fused blobs in SQLite and the point in index.hnsw. Read from the files while
 * the server runs and is idle, through a read-only connection closed before returning.
 */
function vectorWindows(db: string, faceIds: number[]): Map<number, Buffer[]> {
  const cut = (bytes: Buffer): Buffer[] => {
    const middle = Math.floor(bytes.byteLength / 8) * 4;
    return [bytes.subarray(0, 32), bytes.subarray(middle, middle + 32)].map((b) => Buffer.from(b));
  };
  const windows = new Map<number, Buffer[]>(faceIds.map((id) => [id, []]));

  const sqlite = new Database(path.join(db, 'gallery.sqlite'), { readonly: true });
  try {
    const rows = sqlite.prepare('SELECT id, appearance, fused FROM faces').all() as {
      id: number;
      appearance: Buffer;
      fused: Buffer;
    }[];
    for (const row of rows) windows.get(row.id)?.push(...cut(row.appearance), ...cut(row.fused));
  } finally {
    sqlite.close();
  }

  const { dim } = JSON.parse(readFileSync(path.join(db, 'index.meta.json'), 'utf8'));
  const index = new hnswlib.HierarchicalNSW('cosine', dim);
  index.readIndexSync(path.join(db, 'index.hnsw'), true);
  for (const [id, list] of windows) {
    list.push(...cut(Buffer.from(Float32Array.from(index.getPoint(id)).buffer)));
  }
  return windows;
}

/** Names of the files under `dir` (recursively) that hold any of the byte patterns. */
function filesHolding(dir: string, patterns: Buffer[]): string[] {
  const found: string[] = [];
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) {
      found.push(...filesHolding(file, patterns));
      continue;
    }
    const bytes = readFileSync(file);
    if (patterns.some((pattern) => bytes.includes(pattern))) found.push(path.relative(dir, file));
  }
  return found;
}

/**
 * SIGKILLs a server by its PID a random 0..maxDelayMs after arm(), so that the kill lands
 * anywhere in the server's work; `dead` turns true when the signal is sent.
 */
class Killer {
  private armed = false;
  dead = false;

  constructor(
    private readonly server: ChildServer,
    private readonly maxDelayMs: number,
  ) {}

  arm(): void {
    if (this.armed) return;
    this.armed = true;
    setTimeout(() => {
      this.dead = true;
      process.kill(this.server.pid, 'SIGKILL');
    }, Math.random() * this.maxDelayMs);
  }
}

/** Opens the gallery a server left behind, logs the repair chosen, reads and closes it. */
async function reopen(t: ExecutionContext, db: string): Promise<GalleryContents> {
  const messages: string[] = [];
  const gallery: Gallery = await openLeftGallery(db, messages);
  t.log(`reopened: ${messages.join('; ') || 'index file current, no repair'}`);
  try {
    return readContents(gallery);
  } finally {
    gallery.close();
  }
}

/** The index agrees with SQLite: same count and exactly the same face ids. */
function assertIndexAgrees(t: ExecutionContext, contents: GalleryContents): void {
  t.is(contents.stats.faces, contents.stats.indexCount, 'stats: faces === indexCount');
  t.is(contents.faceIds.length, contents.stats.faces);
  t.deepEqual(contents.indexLabels, contents.faceIds, 'index labels are the SQLite face ids');
}

/**
 * Restarts the server on the gallery and checks that it answers: each sample photo (an
 * enrolled one) finds its own identity at rank 1 with cosine ~1, no erased identity is
 * returned, and a new enrolment is acknowledged and lands in the index.
 */
async function checkRestart(
  t: ExecutionContext,
  db: string,
  sample: Acked[],
  erased: string[],
  newcomer: string,
): Promise<void> {
  const server = await serve(t, db);

  for (const { identity, photo } of sample) {
    const res = await request(server.base, 'POST', '/v1/search?k=5', lfw(identity, photo));
    t.is(res.status, 200, JSON.stringify(res.body));
    // The enrolled face is the best match of one of the photo's faces.
    const top = res.body.faces
      .map((f: any) => f.matches[0])
      .sort((a: any, b: any) => b.score - a.score)[0];
    t.is(top.identity, identity, `${identity} photo ${photo} finds itself after the restart`);
    t.true(top.score > 0.99, `score of an enrolled photo: ${top.score}`);
  }
  for (const identity of erased) {
    const res = await request(server.base, 'POST', '/v1/search?k=20', lfw(identity, 1));
    t.is(res.status, 200);
    const found = res.body.faces.flatMap((f: any) => f.matches.map((m: any) => m.identity));
    t.false(found.includes(identity), `erased ${identity} is not found`);
  }

  const enrolled = await enrolPhoto(server, newcomer, 1);
  t.not(enrolled, null, 'enrolment works after the restart');
  const health = await request(server.base, 'GET', '/v1/status');
  t.is(health.body.gallery.faces, health.body.gallery.indexCount);

  await stopServer(server, 'SIGTERM');
}

test.serial('SIGKILL mid-batch keeps every acknowledged enrolment', async (t) => {
  if (!hasData(t)) return;
  const db = galleryDir(t);
  const people = lfwPeople(4).slice(0, 41);
  const batch = people
    .slice(0, 40)
    .flatMap((identity) => [1, 2, 3].map((photo) => ({ identity, photo })));

  // 40 identities x 3 photos, IN_FLIGHT at once. The server is SIGKILLed KILLS times, each
  // time a random 0-300 ms after another ACKS_PER_KILL acknowledgements, and restarted on
  // the same directory; the batch goes on where it was (a cut-off photo is not resent).
  const acked: Acked[] = [];
  let next = 0;
  for (let round = 1; round <= KILLS; round++) {
    const server = await serve(t, db);
    const goal = round * ACKS_PER_KILL;
    const killer = new Killer(server, 300);
    let cutOff = 0;
    const client = async (): Promise<void> => {
      while (!killer.dead && next < batch.length) {
        const { identity, photo } = batch[next++]!;
        const face = await enrolPhoto(server, identity, photo);
        if (face === null) {
          if (killer.dead) cutOff++;
          continue;
        }
        acked.push(face);
        if (acked.length >= goal) killer.arm();
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, client));
    killer.arm();
    t.is((await server.exited).signal, 'SIGKILL');
    t.log(`kill ${round}: ${acked.length} acknowledged in all, ${cutOff} requests cut off`);

    // Every acknowledged face is stored under its identity; nothing foreign appeared.
    const contents = await reopen(t, db);
    for (const face of acked) {
      t.true(
        contents.faces.get(face.identity)?.includes(face.faceId) ?? false,
        `acknowledged face ${face.faceId} of ${face.identity} survived`,
      );
    }
    for (const [identity, ids] of contents.faces) {
      t.true(people.includes(identity), `${identity} was sent`);
      t.true(ids.length <= 3, `${identity} has at most the 3 photos sent`);
    }
    const extras = contents.stats.faces - acked.length;
    t.true(extras >= 0 && extras <= round * IN_FLIGHT, `${extras} unacknowledged faces stored`);
    assertIndexAgrees(t, contents);
  }
  t.true(acked.length >= KILLS * ACKS_PER_KILL);

  const sample = acked.filter((_, i) => i % 6 === 0);
  await checkRestart(t, db, sample, [], people[40]!);
});

test.serial('SIGKILL among concurrent erasures keeps acknowledged erasures erased', async (t) => {
  if (!hasData(t)) return;
  const db = galleryDir(t);
  const people = lfwPeople(4);
  const doomed = people.slice(50, 66);
  const incoming = people.slice(66, 82);
  const server = await serve(t, db);

  // Phase 1: 16 identities x 2 photos, all acknowledged before anything is erased.
  const first: Acked[] = [];
  await pool(
    doomed.flatMap((identity) => [1, 2].map((photo) => ({ identity, photo }))),
    IN_FLIGHT,
    async ({ identity, photo }) => {
      const face = await enrolPhoto(server, identity, photo);
      if (face) first.push(face);
    },
  );
  const present = doomed.filter((identity) => first.some((f) => f.identity === identity));
  t.true(present.length >= 12, `${present.length} of 16 identities enrolled`);
  const windows = vectorWindows(
    db,
    first.map((f) => f.faceId),
  );
  t.true(
    [...windows.values()].every((w) => w.length === 6),
    'every vector was found',
  );

  // Phase 2: one queue of erase A, enrol B photo 1, enrol B photo 2, ...; SIGKILL a random
  // 0-300 ms after half of the erasures are acknowledged, erasures and enrolments in flight.
  type Op =
    { kind: 'erase'; identity: string } | { kind: 'enrol'; identity: string; photo: number };
  const ops: Op[] = present.flatMap((identity, i) => [
    { kind: 'erase' as const, identity },
    { kind: 'enrol' as const, identity: incoming[i]!, photo: 1 },
    { kind: 'enrol' as const, identity: incoming[i]!, photo: 2 },
  ]);
  const erased: string[] = [];
  const enrolled: Acked[] = [];
  const attempted = new Set<string>();
  const killer = new Killer(server, 300);
  await pool(ops, IN_FLIGHT, async (op) => {
    if (killer.dead) return;
    if (op.kind === 'enrol') {
      const face = await enrolPhoto(server, op.identity, op.photo);
      if (face) enrolled.push(face);
    } else {
      attempted.add(op.identity);
      try {
        const res = await request(server.base, 'DELETE', `/v1/identities/${op.identity}`);
        if (res.status === 200) erased.push(op.identity);
      } catch {
        // Cut off by the kill: not acknowledged.
      }
    }
    if (erased.length >= Math.ceil(present.length / 2)) killer.arm();
  });
  killer.arm();
  t.is((await server.exited).signal, 'SIGKILL');
  t.log(`${erased.length} erasures and ${enrolled.length} enrolments acknowledged before the kill`);

  // No byte of an acknowledged erasure's vectors is left in any file the dead server left.
  const erasedWindows = first
    .filter((f) => erased.includes(f.identity))
    .flatMap((f) => windows.get(f.faceId)!);
  t.deepEqual(filesHolding(db, erasedWindows), [], 'erased vectors are in no file');
  const untouched = first.find((f) => !attempted.has(f.identity));
  if (untouched === undefined) t.log('every erasure was sent: no untouched face to compare');
  else {
    // The control: a face nobody tried to erase is found by the same windows.
    const holding = filesHolding(db, windows.get(untouched.faceId)!);
    t.true(holding.includes('gallery.sqlite') && holding.includes('index.hnsw'), `${holding}`);
  }

  // Acknowledged erasures are gone, acknowledged enrolments present; an erasure that was not
  // acknowledged happened entirely or not at all.
  const contents = await reopen(t, db);
  for (const identity of erased) {
    t.false(contents.faces.has(identity), `acknowledged erasure of ${identity} holds`);
    for (const face of first.filter((f) => f.identity === identity)) {
      t.false(contents.indexLabels.includes(face.faceId), `erased face ${face.faceId} not indexed`);
    }
  }
  for (const identity of present.filter((p) => !erased.includes(p))) {
    const ids = first.filter((f) => f.identity === identity).map((f) => f.faceId);
    const held = contents.faces.get(identity);
    if (held !== undefined)
      t.deepEqual(
        held,
        ids.sort((a, b) => a - b),
        `${identity} whole`,
      );
  }
  for (const face of enrolled) {
    t.true(
      contents.faces.get(face.identity)?.includes(face.faceId) ?? false,
      `acknowledged face ${face.faceId} of ${face.identity} survived`,
    );
  }
  assertIndexAgrees(t, contents);

  const sample = enrolled.filter((_, i) => i % 3 === 0);
  await checkRestart(t, db, sample, erased.slice(0, 4), people[90]!);
});

test.serial('SIGTERM mid-batch exits cleanly and keeps every acknowledged enrolment', async (t) => {
  if (!hasData(t)) return;
  const db = galleryDir(t);
  const people = lfwPeople(4).slice(100, 120);
  const batch = people.flatMap((identity) => [1, 2].map((photo) => ({ identity, photo })));

  // As above, but a clean stop: SIGTERM once 12 are acknowledged, requests still in flight.
  const server = await serve(t, db);
  const acked: Acked[] = [];
  const answers = new Map<string, number>();
  let stopping = false;
  await pool(batch, IN_FLIGHT, async ({ identity, photo }) => {
    if (stopping) return;
    let answer: string;
    try {
      const res = await request(
        server.base,
        'POST',
        `/v1/identities/${identity}/faces`,
        lfw(identity, photo),
      );
      answer = res.status === 201 ? '201' : `${res.status} ${res.body?.error?.code}`;
      if (res.status === 201) acked.push({ identity, photo, faceId: res.body.enrolled[0].faceId });
    } catch {
      answer = 'connection closed';
    }
    answers.set(answer, (answers.get(answer) ?? 0) + 1);
    if (acked.length >= 12 && !stopping) {
      stopping = true;
      process.kill(server.pid, 'SIGTERM');
    }
  });
  const exit = await server.exited;
  t.is(exit.code, 0, `exit after SIGTERM: ${JSON.stringify(exit)}`);
  t.log(`answers: ${JSON.stringify(Object.fromEntries(answers))}`);
  // Requests running at the signal finish; later ones are refused or find no server. None
  // fails with a 5xx of its own or a 4xx that would blame its input.
  const allowed = new Set(['201', '503 shutting_down', 'connection closed']);
  t.deepEqual(
    [...answers.keys()].filter((answer) => !allowed.has(answer)),
    [],
  );

  const contents = await reopen(t, db);
  for (const face of acked) {
    t.true(
      contents.faces.get(face.identity)?.includes(face.faceId) ?? false,
      `acknowledged face ${face.faceId} of ${face.identity} survived`,
    );
  }
  const extras = contents.stats.faces - acked.length;
  t.true(extras >= 0 && extras <= IN_FLIGHT, `${extras} unacknowledged faces stored`);
  assertIndexAgrees(t, contents);
});
