/**
 * A bounded load test of the HTTP API on loopback: searches and enrolments at once.
 *
 *   npx tsx bench/load.ts [--data ../shared/data/lfw_multi] [--identities 50] [--searches 400]
 *                         [--concurrency 8] [--enrol-concurrency 2] [--workers N] [--out FILE.json]
 *
 * Starts `reidb serve` as a child process on a temporary gallery (127.0.0.1, port 0) and
 * enrols --identities people of a folder layout (DATA/<identity>/<image>), 2 photos each.
 * Then it sends --searches search requests, --concurrency at a time, each probing with a
 * held-back photo of an enrolled person, while --enrol-concurrency clients keep enrolling
 * photos of other people for as long as the searches run. A 503 (the server refusing load)
 * is counted as refused and not retried; any other failure, or no answer within 60 s, is an
 * error. Prints the command, data folder and machine, and a markdown table for search and
 * enrol: requests done, refused, errors, throughput (answered requests per second of that
 * loop's wall time), p50/p95/p99 latency of the answered requests in ms, and wall time in s.
 * --out FILE writes the same as one JSON document. Progress goes to stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const { values: args } = parseArgs({
  options: {
    data: { type: 'string', default: '../shared/data/lfw_multi' },
    identities: { type: 'string', default: '50' },
    searches: { type: 'string', default: '400' },
    concurrency: { type: 'string', default: '8' },
    'enrol-concurrency': { type: 'string', default: '2' },
    workers: { type: 'string' },
    out: { type: 'string' },
  },
});

const DATA = path.resolve(args.data!);
const IDENTITIES = count('identities', 1);
const SEARCHES = count('searches', 1);
const CONCURRENCY = count('concurrency', 1);
const ENROL_CONCURRENCY = count('enrol-concurrency', 0);
const WORKERS = args.workers === undefined ? undefined : count('workers', 1);

/** Clients enrolling the gallery before the load starts. */
const SETUP_CONCURRENCY = 4;

/** A request without an answer after this long counts as an error, in ms. */
const REQUEST_TIMEOUT_MS = 60_000;

/** How long the server may take to load its models and bind, in ms. */
const START_TIMEOUT_MS = 180_000;

/** Times the setup resends one refused photo before giving up on it. */
const SETUP_RETRIES = 50;

/** The integer value of flag `name`, at least `min`; exits 2 (usage) otherwise. */
function count(name: string, min: number): number {
  const n = Number(args[name as keyof typeof args]);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer of at least ${min}\n`);
    process.exit(2);
  }
  return n;
}

function progress(message: string): void {
  process.stderr.write(`[load] ${message}\n`);
}

/** One photo, read into memory up front so that disk reads are not timed. */
interface Photo {
  identity: string;
  file: string;
  bytes: Buffer;
}

/** The people of the folder layout with at least 3 photos, each photo list sorted. */
function listPeople(root: string): { identity: string; files: string[] }[] {
  return readdirSync(root, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort()
    .map((identity) => ({
      identity,
      files: readdirSync(path.join(root, identity))
        .sort()
        .map((file) => path.join(root, identity, file)),
    }))
    .filter((person) => person.files.length >= 3);
}

function photo(identity: string, file: string): Photo {
  return { identity, file, bytes: readFileSync(file) };
}

/** Starts the server and resolves with its address once it printed its listening line. */
function startServer(db: string): Promise<{ child: ChildProcess; base: string }> {
  const serveArgs = ['serve', '--db', db, '--host', '127.0.0.1', '--port', '0', '--json'];
  if (WORKERS !== undefined) serveArgs.push('--workers', String(WORKERS));
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'reidb.js'), ...serveArgs], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the server did not listen within ${START_TIMEOUT_MS} ms: ${stderr}`));
    }, START_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      const line = stdout.split('\n').find((l) => l.includes('"listening"'));
      if (line === undefined) return;
      clearTimeout(timer);
      resolve({ child, base: JSON.parse(line).listening });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code ?? signal}) before listening: ${stderr}`));
    });
  });
}

/** Stops the server by its PID: SIGTERM, then SIGKILL when it is still there after 10 s. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  process.kill(child.pid!, 'SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/**
 * How one request ended: done (2xx), rejected (4xx: the server refused that photo, e.g.
 * ambiguous_face), refused (503: overloaded) or error (other 5xx, no answer); latency in ms.
 */
interface Outcome {
  kind: 'done' | 'rejected' | 'refused' | 'error';
  ms: number;
  status: number;
  body: any;
}

async function send(base: string, method: string, route: string, body?: Buffer): Promise<Outcome> {
  const start = performance.now();
  try {
    const res = await fetch(base + route, {
      method,
      body: body === undefined ? undefined : new Uint8Array(body),
      headers: body === undefined ? undefined : { 'content-type': 'image/jpeg' },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await res.text();
    const ms = performance.now() - start;
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
    const kind = res.ok
      ? 'done'
      : res.status === 503
        ? 'refused'
        : res.status >= 400 && res.status < 500
          ? 'rejected'
          : 'error';
    return { kind, ms, status: res.status, body: parsed };
  } catch (error) {
    return { kind: 'error', ms: performance.now() - start, status: 0, body: String(error) };
  }
}

function enrol(base: string, p: Photo): Promise<Outcome> {
  return send(base, 'POST', `/v1/identities/${encodeURIComponent(p.identity)}/faces`, p.bytes);
}

/** The figures of one loop. */
interface LoopReport {
  /** Requests sent. */
  requests: number;
  /** Answered with 2xx. */
  done: number;
  /** Answered with 4xx: the photo was refused (no_face, ambiguous_face, ...). */
  rejected: number;
  /** Answered 503 (overloaded). */
  refused: number;
  /** Another 5xx, a network error or a timeout. */
  errors: number;
  /** Rejections and errors by status and error code ('0' for no answer). */
  failuresByCode: Record<string, number>;
  /** Answered requests per second of wall time. */
  throughput: number;
  /** Latency of the answered requests, in ms. */
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  /** From the loop's first request to its last answer, in s. */
  wallSeconds: number;
}

/** Collects outcomes of one loop. */
class Loop {
  private readonly outcomes: Outcome[] = [];
  private started = 0;
  private ended = 0;

  begin(): void {
    this.started = performance.now();
  }

  record(outcome: Outcome): void {
    this.outcomes.push(outcome);
    this.ended = performance.now();
  }

  report(): LoopReport {
    const done = this.outcomes.filter((o) => o.kind === 'done');
    const latency = done.map((o) => o.ms).sort((a, b) => a - b);
    const wall = Math.max(0, (this.ended || this.started) - this.started) / 1000;
    const failuresByCode: Record<string, number> = {};
    for (const o of this.outcomes.filter((o) => o.kind === 'rejected' || o.kind === 'error')) {
      const key = `${o.status} ${o.body?.error?.code ?? ''}`.trim();
      failuresByCode[key] = (failuresByCode[key] ?? 0) + 1;
    }
    const count = (kind: Outcome['kind']): number =>
      this.outcomes.filter((o) => o.kind === kind).length;
    return {
      requests: this.outcomes.length,
      done: done.length,
      rejected: count('rejected'),
      refused: count('refused'),
      errors: count('error'),
      failuresByCode,
      throughput: wall > 0 ? round(done.length / wall, 2) : 0,
      p50Ms: percentile(latency, 50),
      p95Ms: percentile(latency, 95),
      p99Ms: percentile(latency, 99),
      wallSeconds: round(wall, 2),
    };
  }
}

/** Nearest-rank percentile of sorted values, rounded to 0.1; null when there are none. */
function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!, 1);
}

function round(value: number, digits: number): number {
  return Number(value.toFixed(digits));
}

function cell(value: number | null): string {
  return value === null ? '-' : String(value);
}

// The data: gallery people (2 photos enrolled, the 3rd photo probes), then the other people
// whose photos the enrol loop sends during the load (cycling when it runs out).
const people = listPeople(DATA);
if (people.length < IDENTITIES) {
  throw new Error(`${DATA} has ${people.length} people with 3 photos; --identities ${IDENTITIES}`);
}
const galleryPeople = people.slice(0, IDENTITIES);
const galleryPhotos = galleryPeople.flatMap((p) =>
  p.files.slice(0, 2).map((f) => photo(p.identity, f)),
);
const probes = galleryPeople.map((p) => photo(p.identity, p.files[2]!));
const others = people.slice(IDENTITIES);
const loadPhotos = (others.length > 0 ? others : galleryPeople).flatMap((p) =>
  p.files.map((f) => photo(p.identity, f)),
);

const dir = mkdtempSync(path.join(os.tmpdir(), 'reidb-load-'));
let server: { child: ChildProcess; base: string } | null = null;
const onSignal = (): void => {
  if (server) server.child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
  process.exit(130);
};
process.once('SIGINT', onSignal);

try {
  progress(`starting reidb serve on a temporary gallery in ${dir}`);
  server = await startServer(path.join(dir, 'gallery'));
  const base = server.base;
  progress(`listening on ${base}`);

  // Setup: enrol the gallery, SETUP_CONCURRENCY at a time, retrying refusals.
  progress(`enrolling ${galleryPhotos.length} photos of ${IDENTITIES} people`);
  const setupStart = performance.now();
  let setupNext = 0;
  let setupEnrolled = 0;
  let setupRefused = 0;
  await Promise.all(
    Array.from({ length: SETUP_CONCURRENCY }, async () => {
      while (setupNext < galleryPhotos.length) {
        const p = galleryPhotos[setupNext++]!;
        let outcome = await enrol(base, p);
        for (let retry = 0; outcome.kind === 'refused' && retry < SETUP_RETRIES; retry++) {
          setupRefused++;
          await new Promise((resolve) => setTimeout(resolve, 200));
          outcome = await enrol(base, p);
        }
        if (outcome.kind === 'done') setupEnrolled++;
      }
    }),
  );
  const setupSeconds = (performance.now() - setupStart) / 1000;
  progress(`enrolled ${setupEnrolled} of ${galleryPhotos.length} in ${setupSeconds.toFixed(1)} s`);

  // Load: SEARCHES searches, CONCURRENCY at a time; meanwhile ENROL_CONCURRENCY clients enrol
  // until the last search is answered.
  progress(
    `${SEARCHES} searches, ${CONCURRENCY} at a time, beside ${ENROL_CONCURRENCY} enrol clients`,
  );
  const search = new Loop();
  const enrolLoop = new Loop();
  let searchNext = 0;
  let searchesLeft = true;
  let rank1 = 0;
  let searchesAnswered = 0;
  let enrolNext = 0;
  const loadAverageAtStart = os.loadavg().map((l) => round(l, 2));
  search.begin();
  enrolLoop.begin();

  const searchClients = Array.from({ length: CONCURRENCY }, async () => {
    while (searchNext < SEARCHES) {
      const probe = probes[searchNext++ % probes.length]!;
      const outcome = await send(base, 'POST', '/v1/search?k=5', probe.bytes);
      search.record(outcome);
      if (
        outcome.kind === 'done' &&
        outcome.body?.faces?.[0]?.matches?.[0]?.identity === probe.identity
      ) {
        rank1++;
      }
      if (++searchesAnswered % 50 === 0) progress(`${searchesAnswered} searches`);
    }
  });
  const enrolClients = Array.from({ length: ENROL_CONCURRENCY }, async () => {
    while (searchesLeft) {
      enrolLoop.record(await enrol(base, loadPhotos[enrolNext++ % loadPhotos.length]!));
    }
  });
  await Promise.all(searchClients);
  searchesLeft = false;
  await Promise.all(enrolClients);

  const health = await send(base, 'GET', '/v1/status');
  await stopServer(server.child);

  const searchReport = search.report();
  const enrolReport = enrolLoop.report();
  const machine = {
    cpu: os.cpus()[0]?.model,
    cpus: os.cpus().length,
    memoryGiB: round(os.totalmem() / 2 ** 30, 1),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    /** 1, 5 and 15 minute load averages when the load started and when it ended. */
    loadAverageAtStart,
    loadAverage: os.loadavg().map((l) => round(l, 2)),
  };
  const result = {
    command: `npx tsx bench/load.ts ${process.argv.slice(2).join(' ')}`.trim(),
    data: {
      folder: DATA,
      galleryIdentities: IDENTITIES,
      galleryPhotos: galleryPhotos.length,
      probes: probes.length,
      enrolPhotosAvailable: loadPhotos.length,
    },
    machine,
    settings: {
      searches: SEARCHES,
      concurrency: CONCURRENCY,
      enrolConcurrency: ENROL_CONCURRENCY,
      workers: WORKERS ?? 'server default (one per core)',
      k: 5,
    },
    setup: {
      enrolled: setupEnrolled,
      refusedAndRetried: setupRefused,
      seconds: round(setupSeconds, 2),
      imagesPerSecond: round(setupEnrolled / setupSeconds, 2),
    },
    search: {
      ...searchReport,
      rank1OfAnswered: searchReport.done ? round(rank1 / searchReport.done, 3) : null,
    },
    enrol: enrolReport,
    gallery: health.kind === 'done' ? health.body.gallery : null,
  };

  const row = (name: string, r: LoopReport): string =>
    `| ${name} | ${r.requests} | ${r.done} | ${r.rejected} | ${r.refused} | ${r.errors} | ` +
    `${r.throughput} | ` +
    `${cell(r.p50Ms)} | ${cell(r.p95Ms)} | ${cell(r.p99Ms)} | ${r.wallSeconds} |`;
  const lines = [
    `command: ${result.command}`,
    `data: ${DATA} (${IDENTITIES} identities x 2 photos enrolled in ${result.setup.seconds} s; ` +
      `probes: each one's 3rd photo)`,
    `machine: ${machine.cpu}, ${machine.cpus} cores, ${machine.memoryGiB} GiB, node ` +
      `${machine.node}, load average ${loadAverageAtStart.join(' ')} at the start, ` +
      `${machine.loadAverage.join(' ')} at the end`,
    `server workers: ${result.settings.workers}; gallery after the run: ` +
      `${result.gallery?.faces ?? '?'} faces, index ${result.gallery?.indexCount ?? '?'}`,
    '',
    '| loop | requests | done | photo rejected (4xx) | refused (503) | errors | ' +
      'throughput (req/s) | p50 ms | p95 ms | p99 ms | wall s |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    row(`search (${CONCURRENCY} concurrent, k = 5)`, searchReport),
    row(`enrol (${ENROL_CONCURRENCY} concurrent)`, enrolReport),
    '',
    `search rank-1 of answered probes: ${cell(result.search.rank1OfAnswered)}; ` +
      `rejections and errors: search ${JSON.stringify(searchReport.failuresByCode)}, ` +
      `enrol ${JSON.stringify(enrolReport.failuresByCode)}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  if (args.out) {
    writeFileSync(args.out, JSON.stringify(result, null, 2) + '\n');
    progress(`wrote ${args.out}`);
  }
} finally {
  if (server) await stopServer(server.child);
  rmSync(dir, { recursive: true, force: true });
}
