import type { Server } from 'node:http';

import express, {
  type NextFunction,
  type Request,
  type RequestHandler,
  type Response,
} from 'express';

import type { Engine } from '../engine/pool.ts';
import { enrolImages, searchImage, type EnrolItem } from '../engine/service.ts';
import { ReidbError, toReidbError } from '../errors.ts';
import {
  checkPolicyText,
  type Gallery,
  type GalleryPolicy,
  type IdentityPolicy,
} from '../gallery/gallery.ts';
import { validateIdentity } from '../gallery/identity.ts';
import { silentLogger, type Logger } from '../log.ts';
import { listModels } from '../models/registry.ts';
import {
  auditAuditExport,
  auditEnrolment,
  auditErasure,
  auditKeyCreate,
  auditKeyRevoke,
  auditPolicyChange,
  auditedLookup,
  auditRead,
  auditSearch,
} from '../policy/audit-events.ts';
import { policyJson } from '../policy/policy-json.ts';
import { formatDuration, parseDuration } from '../policy/duration.ts';
import { parseRoles } from '../policy/keys.ts';
import { runRetention } from '../policy/retention.ts';
import { subjectAccessReport } from '../policy/subject-access.ts';
import type { Role } from '../policy/types.ts';
import { createAdmission, defaultMaxInFlight, DEFAULT_MAX_QUEUED } from './admission.ts';
import { actorOf, keyOf, requireRole, WWW_AUTHENTICATE } from './auth.ts';
import { createRateLimit, DEFAULT_RATE_LIMIT, type RateLimitOptions } from './rate-limit.ts';
import { httpStatusFor } from './http-errors.ts';
import { readUploads } from './upload.ts';

export interface ApiOptions {
  engine: Engine;
  /** The gallery served; its deployment holds the API keys and the audit trail. */
  gallery: Gallery;
  logger?: Logger;
  /** Largest accepted upload in bytes (whole body). Default 10 MiB. */
  maxUploadBytes?: number;
  /** Most images in one multipart request. Default 16. */
  maxImagesPerRequest?: number;
  /** Enrol and search requests running at once. Default 2 per engine worker, at least 2. */
  maxInFlight?: number;
  /** Enrol and search requests waiting for a slot; beyond that 503 overloaded. Default 32. */
  maxQueued?: number;
  /** Requests per client (API key, or address in open mode); false for none. Default 50/s. */
  rateLimit?: RateLimitOptions | false;
}

export const DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024;

/** Largest JSON body (PUT /v1/policy, POST /v1/keys), in bytes. */
export const MAX_JSON_BYTES = 16 * 1024;

/** Identities listed by GET /v1/identities when no limit is given. */
const DEFAULT_LIST_LIMIT = 100;

/** The policy fields PUT /v1/policy takes, as the body names them. */
const POLICY_BODY_FIELDS = ['keepFor', 'legalBasis', 'purpose', 'thumbnails'] as const;

/** The fields POST /v1/keys takes. */
const KEY_BODY_FIELDS = ['roles', 'label'] as const;

type PolicyField = keyof Omit<GalleryPolicy, 'updatedAt'>;

/**
 * The HTTP API. Routes and the role each needs are those of docs/COMPLIANCE.md; only
 * /healthz answers without a key (see auth.ts for open mode). Authentication runs first on
 * every route, then admission control on the engine routes, then the body is read. Every
 * read, change and erasure of identity data, and every key and policy change, writes an audit
 * row naming the key. Every error is JSON `{error: {code, message, input?}}` with the status
 * from httpStatusFor; no request can take the process down.
 */
export function createApp(options: ApiOptions): express.Express {
  const { engine, gallery } = options;
  const deployment = gallery.deployment;
  const logger = options.logger ?? silentLogger;
  const maxBytes = options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const maxFiles = options.maxImagesPerRequest ?? 16;
  const admission = createAdmission({
    maxInFlight: options.maxInFlight ?? defaultMaxInFlight(engine.workers),
    maxQueued: options.maxQueued ?? DEFAULT_MAX_QUEUED,
  });
  const limit =
    options.rateLimit === false ? null : createRateLimit(options.rateLimit ?? DEFAULT_RATE_LIMIT);
  // Authentication, then the client's rate limit: one handler, so routes keep their types.
  const role = (name: Role): RequestHandler => {
    const authenticate = requireRole(deployment, name);
    if (limit === null) return authenticate;
    return (req, res, next) =>
      authenticate(req, res, (error?: unknown) => (error ? next(error) : limit(req, res, next)));
  };
  const json = [
    requireJsonType,
    express.json({ limit: MAX_JSON_BYTES, inflate: false, strict: true }),
  ];
  const app = express();
  app.disable('x-powered-by');

  // Once shutDown() starts, every new request is refused with 503 and its connection closed,
  // while those already running finish.
  let draining = false;
  app.locals.startDraining = (): void => {
    draining = true;
  };
  app.use((_req, res, next) => {
    // When the request arrived, before admission and upload: an erasure acknowledged after
    // this wins over an enrolment still queued or uploading (Gallery.enrol's fence).
    res.locals.arrivedAt = performance.now();
    if (!draining) return next();
    res.set('Connection', 'close');
    next(new ReidbError('shutting_down', 'the server is shutting down; retry on another one'));
  });

  // Liveness only: it answers without a key, so it says nothing about the gallery.
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/v1/status', role('read'), (_req, res) => {
    const stats = gallery.stats();
    res.json({
      status: 'ok',
      auth: deployment.keys.hasActive() ? 'keys' : 'open',
      backend: engine.identity.embedderId.startsWith('onnx') ? 'onnxruntime-node' : 'tfjs-wasm',
      workers: engine.workers,
      pipeline: { detector: engine.detectorId, mesh: engine.meshId, ...engine.identity },
      models: listModels().map((m) => ({ id: m.id, stage: m.stage, licence: m.licence })),
      gallery: { identities: stats.identities, faces: stats.faces, indexCount: stats.indexCount },
    });
  });

  // --- Face routes: the engine runs, so admission control comes right after the key. ---

  app.post('/v1/identities/:id/faces', role('enrol'), admission.middleware, async (req, res) => {
    const identity = validateIdentity(pathParam(req));
    const camera = queryString(req, 'camera');
    const capturedAt = queryString(req, 'capturedAt');
    const policy = enrolmentPolicy(req);
    // Retention and the Art. 30 record are a compliance decision, not an operator's: an
    // enrol-only key that could set them could erase people (keepFor=1s) or keep them.
    const key = keyOf(res);
    if (Object.keys(policy).length > 0 && key !== null && !key.roles.includes('compliance')) {
      throw new ReidbError(
        'forbidden',
        "keepFor, legalBasis and purpose on an enrolment need a key with the 'compliance' role",
        { details: { role: 'compliance' } },
      );
    }
    const uploads = await readUploads(req, maxBytes, maxFiles);

    const items: EnrolItem[] = uploads.map((u) => ({
      identity,
      image: { buffer: u.buffer, name: u.name },
      camera,
      capturedAt,
    }));
    const startedAt = res.locals.arrivedAt as number;
    const report = await enrolImages(engine, gallery, items, { policy, startedAt });
    auditEnrolment(deployment, actorOf(res), report, items, policy);

    if (report.enrolled.length === 0) {
      const first = report.skipped[0];
      throw new ReidbError(first.code as ReidbError['code'], first.message, {
        input: first.file,
        details: { skipped: report.skipped },
      });
    }
    res.status(201).json({ identity, enrolled: report.enrolled, skipped: report.skipped });
  });

  app.post('/v1/search', role('search'), admission.middleware, async (req, res) => {
    const actor = actorOf(res);
    const k = queryInt(req, 'k', 1, 1000) ?? 5;
    const minScore = queryNumber(req, 'minScore', -1, 1);
    const uploads = await readUploads(req, maxBytes, maxFiles);

    // One audit row per probe image, whatever its outcome; never the image or its vector.
    const results = await Promise.all(
      uploads.map(async (u) => {
        try {
          const report = await searchImage(
            engine,
            gallery,
            { buffer: u.buffer, name: u.name },
            { k, minScore },
          );
          auditSearch(deployment, actor, report, k);
          return report;
        } catch (e) {
          const err = toReidbError(e, u.name);
          const failure = { file: u.name, error: { code: err.code, message: err.message } };
          auditSearch(deployment, actor, failure, k);
          if (uploads.length === 1) throw e;
          return { file: u.name, error: err.toJSON() };
        }
      }),
    );
    res.json(results.length === 1 ? results[0] : { results });
  });

  // --- Reading identity data. ---

  app.get('/v1/identities', role('read'), (req, res) => {
    const limit = queryInt(req, 'limit', 1, 10_000) ?? DEFAULT_LIST_LIMIT;
    const offset = queryInt(req, 'offset', 0, Number.MAX_SAFE_INTEGER) ?? 0;

    const identities = gallery.listIdentities(limit, offset);
    auditRead(deployment, actorOf(res), 'list');
    res.json({ identities, limit, offset });
  });

  app.get('/v1/identities/:id', role('read'), (req, res) => {
    const identity = pathParam(req);
    const record = auditedLookup(deployment, actorOf(res), 'read', identity, () =>
      gallery.getIdentity(identity),
    );
    auditRead(deployment, actorOf(res), 'read', record.identity);
    res.json(record);
  });

  // --- Compliance: erasure, subject access, retention and the audit trail. ---

  app.delete('/v1/identities/:id', role('compliance'), (req, res) => {
    const actor = actorOf(res);
    const identity = pathParam(req);
    const result = auditedLookup(deployment, actor, 'erase', identity, () =>
      gallery.erase(identity, { actor }),
    );
    auditErasure(deployment, actor, result);
    res.json({
      identity: result.identity,
      facesRemoved: result.facesRemoved,
      identityRef: result.identityRef,
    });
  });

  app.get('/v1/identities/:id/export', role('compliance'), (req, res) => {
    const vectors = queryBoolean(req, 'vectors') ?? false;

    const identity = pathParam(req);
    const report = auditedLookup(deployment, actorOf(res), 'export_identity', identity, () =>
      subjectAccessReport(gallery, identity, { vectors }),
    );
    auditRead(deployment, actorOf(res), 'export_identity', report.identity, { vectors });
    res.json(report);
  });

  app.post('/v1/retention/run', role('compliance'), (req, res) => {
    const dryRun = queryBoolean(req, 'dryRun') ?? false;
    res.json(runRetention(gallery, { actor: actorOf(res), dryRun }));
  });

  app.get('/v1/audit', role('compliance'), (req, res) => {
    const format = queryChoice(req, 'format', ['json', 'csv'] as const) ?? 'json';
    const identity = queryString(req, 'identity');
    const identityRef =
      identity === undefined ? undefined : deployment.identityRef(validateIdentity(identity));
    const fromSeq = queryInt(req, 'fromSeq', 1, Number.MAX_SAFE_INTEGER);
    const limit = queryInt(req, 'limit', 1, Number.MAX_SAFE_INTEGER);

    // Read before the export's own row is written: the answer is the trail as it was asked for.
    const rows = deployment.audit.rows({ identityRef, fromSeq, limit });
    auditAuditExport(deployment, actorOf(res), { format, rows: rows.length, identityRef });
    if (format === 'json') {
      res.json({ rows });
      return;
    }
    res.type('text/csv; charset=utf-8').send(deployment.audit.toCsv(rows));
  });

  // 200 whether or not the trail is intact: the answer is the finding, `ok` says which.
  app.get('/v1/audit/verify', role('compliance'), (_req, res) => {
    res.json(deployment.audit.verify());
  });

  // --- Policy and keys. ---

  app.get('/v1/policy', role('read'), (_req, res) => {
    res.json(policyJson(gallery.policy()));
  });

  app.put('/v1/policy', role('admin'), ...json, (req, res) => {
    const patch = policyPatch(req.body);
    const given = Object.keys(patch) as PolicyField[];

    const before = gallery.policy();
    const policy = gallery.setPolicy(patch);
    const changed = given.filter((field) => before[field] !== policy[field]);
    if (changed.length > 0) auditPolicyChange(deployment, actorOf(res), changed, policy);
    res.json({ ...policyJson(policy), changed });
  });

  app.get('/v1/keys', role('admin'), (_req, res) => {
    res.json({ keys: deployment.keys.list() });
  });

  app.post('/v1/keys', role('admin'), ...json, (req, res) => {
    const body = objectBody(req.body, KEY_BODY_FIELDS);
    const roles = typeof body.roles === 'string' ? parseRoles(body.roles) : body.roles;

    const created = deployment.keys.create({
      roles: roles as Role[],
      label: body.label as string | undefined,
    });
    auditKeyCreate(deployment, actorOf(res), created);
    // The key is shown once; no cache along the way may keep it.
    res.status(201).set('Cache-Control', 'no-store').json(created);
  });

  // A key may revoke itself, and the last admin key may be revoked: then only the CLI can
  // create keys. Revoking the last active key of all returns the server to open mode, which
  // answers on loopback only (auth.ts).
  app.delete('/v1/keys/:id', role('admin'), (req, res) => {
    const wasActive = deployment.keys.get(pathParam(req))?.revokedAt === null;
    const record = deployment.keys.revoke(pathParam(req));
    if (wasActive) auditKeyRevoke(deployment, actorOf(res), record);
    res.json(record);
  });

  app.use((req, _res, next) => {
    next(new ReidbError('not_found', `no route ${req.method} ${req.path}`, { input: req.path }));
  });

  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const err = bodyParserError(error) ?? toReidbError(error);
    const status = httpStatusFor(err.code);
    if (status >= 500 && !['overloaded', 'auth_required', 'shutting_down'].includes(err.code)) {
      logger.error('request failed', { path: req.path, error: err.message });
    }
    if (res.headersSent) return;
    if (err.code === 'overloaded' || err.code === 'rate_limited')
      res.set('Retry-After', String(err.details?.retryAfterSeconds ?? 1));
    if (err.code === 'unauthorized') res.set('WWW-Authenticate', WWW_AUTHENTICATE);
    res.status(status).json({ error: err.toJSON() });
  });

  return app;
}

/**
 * Refuses a JSON route's request whose body is not declared application/json with
 * unsupported_media_type, before express.json (which would skip it and leave no body).
 */
function requireJsonType(req: Request, _res: Response, next: NextFunction): void {
  if (req.is('application/json')) {
    next();
    return;
  }
  const type = req.headers['content-type'] ?? '(none)';
  next(
    new ReidbError(
      'unsupported_media_type',
      `content type '${type}' is not accepted; send a JSON object as application/json`,
      { input: type },
    ),
  );
}

/** A parsed JSON body as a plain object, refusing any field not in `fields` by name. */
function objectBody(body: unknown, fields: readonly string[]): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ReidbError('invalid_argument', 'the body must be a JSON object', { input: 'body' });
  }
  for (const field of Object.keys(body)) {
    if (!fields.includes(field)) {
      throw new ReidbError(
        'invalid_argument',
        `unknown field '${field}'; the fields are ${fields.join(', ')}`,
        { input: field },
      );
    }
  }
  return body as Record<string, unknown>;
}

/**
 * The policy patch of a PUT /v1/policy body: keepFor as a duration ('30d') or null for none,
 * legalBasis and purpose as text or null, thumbnails off|on|blurred. Gallery.setPolicy checks
 * the values and names a bad one. Throws invalid_argument for an unknown field or none at all.
 */
function policyPatch(body: unknown): Partial<Omit<GalleryPolicy, 'updatedAt'>> {
  const fields = objectBody(body, POLICY_BODY_FIELDS);
  const patch: Partial<Omit<GalleryPolicy, 'updatedAt'>> = {};

  if (fields.keepFor !== undefined) {
    patch.keepForSeconds =
      fields.keepFor === null ? null : parseDuration(fields.keepFor as string, 'keepFor');
  }
  if (fields.legalBasis !== undefined) patch.legalBasis = fields.legalBasis as string | null;
  if (fields.purpose !== undefined) patch.purpose = fields.purpose as string | null;
  if (fields.thumbnails !== undefined) {
    patch.thumbnails = fields.thumbnails as GalleryPolicy['thumbnails'];
  }

  if (Object.keys(patch).length === 0) {
    throw new ReidbError(
      'invalid_argument',
      `give at least one of ${POLICY_BODY_FIELDS.join(', ')}`,
      { input: 'body' },
    );
  }
  return patch;
}

/**
 * What an enrolment records for its identity, from the query: keepFor (a duration such as
 * 30d), legalBasis and purpose (text). Checked here, before the body is read and the engine
 * runs, with the gallery's own limits; absent fields follow the gallery's policy.
 */
function enrolmentPolicy(req: Request): IdentityPolicy {
  const policy: IdentityPolicy = {};

  const keepFor = queryString(req, 'keepFor');
  if (keepFor !== undefined) policy.keepForSeconds = parseDuration(keepFor, 'keepFor');

  for (const field of ['legalBasis', 'purpose'] as const) {
    const value = queryString(req, field);
    if (value !== undefined) policy[field] = checkPolicyText(value, field);
  }

  return policy;
}

/** What body-parser throws, as the ReidbError it means; null for anything else. */
function bodyParserError(error: unknown): ReidbError | null {
  const e = error as { type?: string; status?: number; message?: string };
  if (e && e.type === 'entity.too.large')
    return new ReidbError('payload_too_large', String(e.message));
  if (e && e.status === 415) return new ReidbError('unsupported_media_type', String(e.message));
  if (e && typeof e.status === 'number' && e.status === 400) {
    return new ReidbError('invalid_argument', String(e.message));
  }
  return null;
}

/** The `:id` of a route path (express decodes it); one segment, never an array. */
function pathParam(req: Request): string {
  const v = req.params.id;
  if (typeof v !== 'string') {
    throw new ReidbError('invalid_argument', 'the path must name one id', { input: 'id' });
  }
  return v;
}

function queryBoolean(req: Request, name: string): boolean | undefined {
  const v = queryString(req, name);
  if (v === undefined) return undefined;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new ReidbError('invalid_argument', `${name} must be true or false, got '${v}'`, {
    input: name,
  });
}

function queryChoice<T extends string>(
  req: Request,
  name: string,
  choices: readonly T[],
): T | undefined {
  const v = queryString(req, name);
  if (v === undefined) return undefined;
  if ((choices as readonly string[]).includes(v)) return v as T;
  throw new ReidbError('invalid_argument', `${name} must be ${choices.join(' or ')}, got '${v}'`, {
    input: name,
  });
}

function queryString(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') {
    throw new ReidbError('invalid_argument', `query parameter ${name} must be given once`, {
      input: name,
    });
  }
  return v;
}

function queryNumber(req: Request, name: string, min: number, max: number): number | undefined {
  const v = queryString(req, name);
  if (v === undefined) return undefined;
  const n = /^-?(\d+\.?\d*|\.\d+)$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new ReidbError(
      'invalid_argument',
      `${name} must be a number from ${min} to ${max}, got '${v}'`,
      {
        input: name,
      },
    );
  }
  return n;
}

function queryInt(req: Request, name: string, min: number, max: number): number | undefined {
  const n = queryNumber(req, name, min, max);
  if (n !== undefined && !Number.isInteger(n)) {
    throw new ReidbError('invalid_argument', `${name} must be an integer, got '${n}'`, {
      input: name,
    });
  }
  return n;
}

/**
 * Stops `server` the way its clients expect: new requests get 503 `shutting_down` (and their
 * keep-alive connection closed), requests already running finish and get their answers, and
 * idle connections are closed. Resolves once every connection has ended, or after
 * `timeoutMs` (default 30 s), when the remaining connections are cut. Resolves with whether
 * every request finished in time.
 */
export async function shutDown(
  server: Server,
  app: express.Express,
  timeoutMs = 30_000,
): Promise<boolean> {
  (app.locals.startDraining as (() => void) | undefined)?.();
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));

  // A connection that finishes its request becomes idle: close those as they appear.
  const sweep = setInterval(() => server.closeIdleConnections(), 100);
  server.closeIdleConnections();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => {
      server.closeAllConnections();
      resolve(false);
    }, timeoutMs);
  });

  const drained = await Promise.race([closed.then(() => true), timedOut]);
  clearInterval(sweep);
  clearTimeout(timer);
  return drained;
}

/** Starts listening; resolves with the server once it is bound (port 0 picks a free port). */
export function listen(app: express.Express, port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host, (error?: Error) =>
      error ? reject(error) : resolve(server),
    );
    server.on('error', reject);
  });
}
