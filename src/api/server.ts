import type { Server } from 'node:http';

import express, { type NextFunction, type Request, type Response } from 'express';

import type { Engine } from '../engine/pool.ts';
import { enrolImages, searchImage } from '../engine/service.ts';
import { ReidbError, toReidbError } from '../errors.ts';
import type { Gallery } from '../gallery/gallery.ts';
import { validateIdentity } from '../gallery/identity.ts';
import { silentLogger, type Logger } from '../log.ts';
import { listModels } from '../models/registry.ts';
import { createAdmission, defaultMaxInFlight, DEFAULT_MAX_QUEUED } from './admission.ts';
import { httpStatusFor } from './http-errors.ts';
import { readUploads } from './upload.ts';

export interface ApiOptions {
  engine: Engine;
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
}

export const DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024;

/**
 * The HTTP API. Every error is JSON `{error: {code, message, input?}}` with the status from
 * httpStatusFor; no request can take the process down.
 */
export function createApp(options: ApiOptions): express.Express {
  const { engine, gallery } = options;
  const logger = options.logger ?? silentLogger;
  const maxBytes = options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const maxFiles = options.maxImagesPerRequest ?? 16;
  const admission = createAdmission({
    maxInFlight: options.maxInFlight ?? defaultMaxInFlight(engine.workers),
    maxQueued: options.maxQueued ?? DEFAULT_MAX_QUEUED,
  });
  const app = express();
  app.disable('x-powered-by');

  app.get('/healthz', (_req, res) => {
    const stats = gallery.stats();
    res.json({
      status: 'ok',
      backend: engine.identity.embedderId.startsWith('onnx') ? 'onnxruntime-node' : 'tfjs-wasm',
      workers: engine.workers,
      pipeline: { detector: engine.detectorId, mesh: engine.meshId, ...engine.identity },
      models: listModels().map((m) => ({ id: m.id, stage: m.stage, licence: m.licence })),
      gallery: { identities: stats.identities, faces: stats.faces, indexCount: stats.indexCount },
    });
  });

  app.post('/v1/identities/:id/faces', admission.middleware, async (req, res) => {
    const identity = validateIdentity(req.params.id);
    const uploads = await readUploads(req, maxBytes, maxFiles);
    const camera = queryString(req, 'camera');
    const capturedAt = queryString(req, 'capturedAt');

    const report = await enrolImages(
      engine,
      gallery,
      uploads.map((u) => ({
        identity,
        image: { buffer: u.buffer, name: u.name },
        camera,
        capturedAt,
      })),
    );
    if (report.enrolled.length === 0) {
      const first = report.skipped[0];
      throw new ReidbError(first.code as ReidbError['code'], first.message, {
        input: first.file,
        details: { skipped: report.skipped },
      });
    }
    res.status(201).json({ identity, enrolled: report.enrolled, skipped: report.skipped });
  });

  app.post('/v1/search', admission.middleware, async (req, res) => {
    const k = queryInt(req, 'k', 1, 1000) ?? 5;
    const minScore = queryNumber(req, 'minScore', -1, 1);
    const uploads = await readUploads(req, maxBytes, maxFiles);

    const results = await Promise.all(
      uploads.map(async (u) => {
        try {
          return await searchImage(
            engine,
            gallery,
            { buffer: u.buffer, name: u.name },
            { k, minScore },
          );
        } catch (e) {
          if (uploads.length === 1) throw e;
          const err = toReidbError(e, u.name);
          return { file: u.name, error: err.toJSON() };
        }
      }),
    );
    res.json(results.length === 1 ? results[0] : { results });
  });

  app.get('/v1/identities/:id', (req, res) => {
    res.json(gallery.getIdentity(req.params.id));
  });

  app.delete('/v1/identities/:id', (req, res) => {
    res.json(gallery.erase(req.params.id));
  });

  app.use((req, _res, next) => {
    next(new ReidbError('not_found', `no route ${req.method} ${req.path}`, { input: req.path }));
  });

  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const err = bodyParserError(error) ?? toReidbError(error);
    const status = httpStatusFor(err.code);
    if (status >= 500 && err.code !== 'overloaded') {
      logger.error('request failed', { path: req.path, error: err.message });
    }
    if (res.headersSent) return;
    if (err.code === 'overloaded')
      res.set('Retry-After', String(err.details?.retryAfterSeconds ?? 1));
    res.status(status).json({ error: err.toJSON() });
  });

  return app;
}

function bodyParserError(error: unknown): ReidbError | null {
  const e = error as { type?: string; status?: number; message?: string };
  if (e && e.type === 'entity.too.large')
    return new ReidbError('payload_too_large', String(e.message));
  if (e && typeof e.status === 'number' && e.status === 400) {
    return new ReidbError('invalid_argument', String(e.message));
  }
  return null;
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

/** Starts listening; resolves with the server once it is bound (port 0 picks a free port). */
export function listen(app: express.Express, port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host, (error?: Error) =>
      error ? reject(error) : resolve(server),
    );
    server.on('error', reject);
  });
}
