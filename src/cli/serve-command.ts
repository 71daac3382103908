import { once } from 'node:events';
import { isIPv4, isIPv6 } from 'node:net';

import { DEFAULT_RATE_LIMIT } from '../api/rate-limit.ts';
import { createApp, listen, shutDown } from '../api/server.ts';
import { ReidbError } from '../errors.ts';
import { createEngine } from '../engine/pool.ts';
import { parseDuration } from '../policy/duration.ts';
import { startRetentionSchedule } from '../policy/retention-schedule.ts';
import { int, str, type FlagSpec, type ParsedArgs } from './args.ts';
import { keepFusionModel, openCliGallery } from './gallery-location.ts';
import type { CommandContext, CommandOutput } from './main.ts';
import { engineOptions } from './options.ts';

export const SERVE_FLAGS: FlagSpec = {
  db: true,
  port: true,
  host: true,
  'max-upload-mb': true,
  'rate-limit': true,
  'retention-interval': true,
};

/** Default time between retention runs of a server, in seconds (1 h). */
export const DEFAULT_RETENTION_INTERVAL_S = 3600;

/**
 * Whether `host` only reaches this machine: 'localhost', an IPv4 address in 127.0.0.0/8 or
 * the IPv6 loopback ::1 (in any spelling, brackets allowed). Anything else, 0.0.0.0 and ::
 * included, may be reachable from other machines.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (bare.toLowerCase() === 'localhost') return true;
  if (isIPv4(bare)) return bare.split('.')[0] === '127';
  if (isIPv6(bare)) {
    // The URL parser writes an IPv6 address in its shortest form: ::1 however it was given.
    try {
      return new URL(`http://[${bare}]/`).hostname === '[::1]';
    } catch {
      return false;
    }
  }
  return false;
}

/**
 * Refuses to serve on a host other machines may reach while the deployment has no active
 * API key (the API would answer anyone): auth_required naming the host, with the command
 * that fixes it.
 */
export function checkServeAuth(host: string, hasActiveKey: boolean, dir: string): void {
  if (hasActiveKey || isLoopbackHost(host)) return;
  throw new ReidbError(
    'auth_required',
    `refusing to listen on ${host} without API keys: create one with ` +
      `reidb keys create --db ${dir} --role ...`,
    { input: host },
  );
}

/** --retention-interval in ms: a duration (default 1h), or null for `off`. */
function retentionInterval(args: ParsedArgs): number | null {
  const text = str(args, 'retention-interval');
  if (text === 'off') return null;
  const seconds =
    text === undefined ? DEFAULT_RETENTION_INTERVAL_S : parseDuration(text, '--retention-interval');
  return seconds * 1000;
}

/**
 * `reidb serve`: starts the HTTP API and runs until SIGINT or SIGTERM. Refuses, before any
 * model is loaded, a non-loopback --host while no API key exists. Runs retention every
 * --retention-interval. Prints one line (or, with --json, one JSON document) with the bound
 * address and whether keys are required once it is listening.
 */
export async function serveCommand(ctx: CommandContext): Promise<CommandOutput> {
  const { args, logger } = ctx;
  const port = int(args, 'port', 0, 65535) ?? 8080;
  const host = str(args, 'host') ?? '127.0.0.1';
  const maxMb = int(args, 'max-upload-mb', 1, 1024) ?? 10;
  const perSecond = int(args, 'rate-limit', 0, 100_000) ?? DEFAULT_RATE_LIMIT.perSecond;
  const intervalMs = retentionInterval(args);

  const gallery = await openCliGallery(ctx);
  const keyed = gallery.deployment.keys.hasActive();
  try {
    checkServeAuth(host, keyed, gallery.dir);
  } catch (e) {
    gallery.close();
    throw e;
  }

  const options = engineOptions(args, logger, gallery.config(), gallery.dir);
  const engine = await createEngine(options).catch((e) => {
    gallery.close();
    throw e;
  });
  keepFusionModel(gallery, engine, options.pipeline?.fusionModel);
  const app = createApp({
    engine,
    gallery,
    logger,
    maxUploadBytes: maxMb * 1024 * 1024,
    rateLimit: perSecond === 0 ? false : { perSecond, burst: 2 * perSecond },
  });
  let server;
  try {
    server = await listen(app, port, host);
  } catch (e) {
    await engine.close();
    gallery.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      throw new ReidbError(
        'port_in_use',
        `cannot listen on ${host}:${port}: ${(e as Error).message}`,
        {
          input: `${host}:${port}`,
        },
      );
    }
    throw e;
  }

  const retention =
    intervalMs === null ? null : startRetentionSchedule(gallery, { intervalMs, logger });

  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  const url = `http://${host}:${bound}`;
  const auth = keyed ? 'keys' : 'open';
  const mode = keyed
    ? 'API keys required'
    : 'open: no API keys, loopback only; create one with reidb keys create';
  ctx.stdout(
    args.flags.json
      ? JSON.stringify({ listening: url, auth, retentionIntervalMs: intervalMs }) + '\n'
      : `reidb listening on ${url} (${mode})\n`,
  );

  await Promise.race([once(process, 'SIGINT'), once(process, 'SIGTERM')]);
  retention?.stop();
  const drained = await shutDown(server, app);
  if (!drained) logger.warn('requests still running at shutdown were cut off');
  await engine.close();
  gallery.close();
  return { json: undefined, text: 'reidb stopped' };
}
