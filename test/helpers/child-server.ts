import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';

import { openGallery, type Gallery } from '../../src/gallery/gallery.ts';
import { loadIndexFile } from '../../src/gallery/vector-index.ts';
import { REPO_ROOT } from './cli.ts';
import { dataPath } from './data.ts';

const BIN = path.join(REPO_ROOT, 'bin', 'reidb.js');

/** How long a server may take to load its models and bind, in ms (the machine is shared). */
const START_TIMEOUT_MS = 180_000;

/** A `reidb serve` child process on loopback. */
export interface ChildServer {
  child: ChildProcess;
  pid: number;
  /** http://127.0.0.1:PORT */
  base: string;
  /** Resolves once the process has exited (and been reaped). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything the server wrote to stderr so far. */
  stderr(): string;
}

/**
 * Starts the real server (`node bin/reidb.js serve --db DB --port 0 --json --workers 2`) and
 * resolves once it printed its listening line. Rejects when it exits or stays silent first.
 */
export function startServer(db: string, workers = 2): Promise<ChildServer> {
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--db', db, '--port', '0', '--json', '--workers', String(workers)],
    { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not listen within ${START_TIMEOUT_MS} ms: ${stderr}`));
    }, START_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      const line = stdout.split('\n').find((l) => l.includes('"listening"'));
      if (line === undefined) return;
      clearTimeout(timer);
      resolve({
        child,
        pid: child.pid!,
        base: JSON.parse(line).listening,
        exited,
        stderr: () => stderr,
      });
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before listening: ${stderr}`));
    });
  });
}

/** Sends `signal` to the server's own PID and waits until it has exited. */
export async function stopServer(
  server: ChildServer,
  signal: NodeJS.Signals = 'SIGTERM',
): Promise<void> {
  if (server.child.exitCode === null && server.child.signalCode === null) {
    process.kill(server.pid, signal);
  }
  await server.exited;
}

/** One HTTP answer: status and parsed JSON body (null when the body was not JSON). */
export interface Answer {
  status: number;
  body: any;
}

/** Times a 503 (admission control) is retried before the refusal is returned. */
const RETRIES_ON_503 = 20;

/**
 * One request to the server; a 503 is retried after its Retry-After (at most 0.5 s) so that
 * a refusal is never mistaken for an answer. Network errors (a killed server) are thrown.
 */
export async function request(
  base: string,
  method: string,
  route: string,
  body?: Buffer,
): Promise<Answer> {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(base + route, {
      method,
      body: body === undefined ? undefined : new Uint8Array(body),
      headers: body === undefined ? undefined : { 'content-type': 'image/jpeg' },
    });
    const text = await res.text();
    if (res.status === 503 && attempt < RETRIES_ON_503) {
      const after = Number(res.headers.get('retry-after') ?? '0.1');
      await sleep(Math.min(500, Math.max(50, after * 1000)));
      continue;
    }
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = null;
    }
    return { status: res.status, body: parsed };
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** LFW identities of lfw_multi with at least `photos` photos, sorted by name. */
export function lfwPeople(photos: number): string[] {
  const root = dataPath('lfw_multi');
  return readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .filter((name) => readdirSync(path.join(root, name)).length >= photos)
    .sort();
}

/** Runs `work` on every item with at most `concurrency` in flight; resolves when all settled. */
export async function pool<T>(
  items: T[],
  concurrency: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const loop = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!;
      await work(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, loop));
}

/** What a gallery holds, read through SQLite and through the saved HNSW file. */
export interface GalleryContents {
  /** identity -> its face ids in SQLite, sorted. */
  faces: Map<string, number[]>;
  /** Every face id in SQLite, sorted. */
  faceIds: number[];
  /** Every live label of the saved index file, sorted. */
  indexLabels: number[];
  stats: { identities: number; faces: number; indexCount: number };
}

/**
 * Reads a gallery opened with openGallery: the face ids of every identity (SQLite) and the
 * labels of the index file the open just loaded or repaired (its in-memory index, saved).
 */
export function readContents(gallery: Gallery): GalleryContents {
  gallery.flush();
  const faces = new Map<string, number[]>();
  for (let offset = 0; ; offset += 1000) {
    const page = gallery.listIdentities(1000, offset);
    for (const summary of page) {
      const ids = gallery.getIdentity(summary.identity).faces.map((f) => f.faceId);
      faces.set(
        summary.identity,
        ids.sort((a, b) => a - b),
      );
    }
    if (page.length < 1000) break;
  }

  const stats = gallery.stats();
  const loaded = loadIndexFile(gallery.dir, stats.config!.fusedDim);
  if ('problem' in loaded) throw new Error(`index file unusable after open: ${loaded.problem}`);
  return {
    faces,
    faceIds: [...faces.values()].flat().sort((a, b) => a - b),
    indexLabels: loaded.index.labels().sort((a, b) => a - b),
    stats: { identities: stats.identities, faces: stats.faces, indexCount: stats.indexCount },
  };
}

/**
 * Opens a gallery a server left behind (its lock is taken over when that server is dead);
 * `messages` receives what the open logged (which index repair it chose).
 */
export function openLeftGallery(dir: string, messages: string[] = []): Promise<Gallery> {
  const keep = (message: string, fields?: Record<string, unknown>): void => {
    messages.push(fields === undefined ? message : `${message} ${JSON.stringify(fields)}`);
  };
  const logger = { debug: keep, info: keep, warn: keep, error: keep };
  return openGallery(dir, { mustExist: true, logger });
}
