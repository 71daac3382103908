/**
 * Authentication and roles for the HTTP API (docs/COMPLIANCE.md, "Roles and API keys").
 *
 * Every route but /healthz is mounted behind `requireRole(deployment, role)`, first in its
 * chain: before admission control and before anything reads the body, so that a request
 * without a valid key costs one SQLite lookup and nothing else.
 *
 * While the deployment has no active key the API runs open: every request passes as the
 * actor `anonymous`. The mode is looked up at every request, so a key created or revoked
 * while the server runs takes effect at the next request. `reidb serve` refuses to listen on
 * another host than loopback while there is no key; since the last key can be revoked while
 * the server runs, open mode also refuses requests that did not arrive on a loopback address.
 */
import { isIP } from 'node:net';

import type { NextFunction, Request, RequestHandler, Response } from 'express';

import { ReidbError } from '../errors.ts';
import type { Deployment } from '../policy/deployment.ts';
import type { KeyRecord, Role } from '../policy/types.ts';

/** The audit actor of a request in open mode. */
export const ANONYMOUS_ACTOR = 'anonymous';

/** The challenge sent with every 401 (RFC 6750). */
export const WWW_AUTHENTICATE = 'Bearer realm="reidb"';

/** What requireRole leaves in res.locals for the route. */
interface AuthLocals {
  /** `key:<id>` or `anonymous`. */
  actor?: string;
  /** The key the request authenticated with; null in open mode. */
  key?: KeyRecord | null;
}

/**
 * The one 401 the API gives, whatever was wrong (no header, another scheme, two headers, a
 * malformed, unknown or revoked key): telling them apart would help whoever guesses keys.
 */
function unauthorized(): ReidbError {
  return new ReidbError(
    'unauthorized',
    'this route needs a valid API key (the one sent, if any, is unknown, malformed or ' +
      'revoked): send Authorization: Bearer <key>',
  );
}

/**
 * The bearer token of a request, or null when there is none that could be one: the
 * Authorization header missing, given more than once (Node keeps only the first in
 * req.headers, so rawHeaders is counted), with another scheme than Bearer (compared without
 * case, RFC 7235), or with no token or a token holding white space.
 */
function bearerToken(req: Request): string | null {
  const values: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === 'authorization') values.push(req.rawHeaders[i + 1]!);
  }
  if (values.length !== 1) return null;

  const match = /^([^\s]+) +([^\s]+)$/.exec(values[0]!.trim());
  if (match === null || match[1]!.toLowerCase() !== 'bearer') return null;
  return match[2]!;
}

/** Whether an address the socket was reached on is a loopback one (127/8, ::1, mapped). */
function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const plain = address.startsWith('::ffff:') ? address.slice(7) : address;
  if (isIP(plain) === 4) return plain.startsWith('127.');
  return plain === '::1';
}

/** A Host header naming this machine's loopback: localhost, 127.x.x.x or [::1], any port. */
const LOOPBACK_HOST = /^(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?$/i;

/** An Origin of a page served from this machine's loopback. */
const LOOPBACK_ORIGIN = /^https?:\/\/(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?$/i;

/**
 * Why a request is not a local one, or null when it is. In open mode every local request has
 * every role, so a request must have arrived on a loopback address, not have been forwarded
 * by a proxy on this host (Forwarded, X-Forwarded-For, X-Real-IP), be addressed to a
 * loopback host name (a page on another site that rebinds its DNS name to 127.0.0.1 sends
 * its own name), and not come from a page of another origin (a browser's cross-site form
 * post needs no preflight: Origin or Sec-Fetch-Site say where it came from).
 */
function notLocal(req: Request): string | null {
  if (!isLoopback(req.socket.localAddress)) return 'this one arrived on a non-loopback address';
  const headers = req.headers ?? {};
  if (['forwarded', 'x-forwarded-for', 'x-real-ip'].some((h) => headers[h] !== undefined)) {
    return 'this one was forwarded by a proxy';
  }
  if (headers.host !== undefined && !LOOPBACK_HOST.test(headers.host)) {
    return 'this one is addressed to another host name';
  }
  const origin = headers.origin;
  if (
    (origin !== undefined && !LOOPBACK_ORIGIN.test(origin)) ||
    headers['sec-fetch-site'] === 'cross-site'
  ) {
    return 'this one came from a web page of another site';
  }
  return null;
}

/**
 * Middleware that lets a request through only with a valid, unrevoked key holding `role`,
 * and records its actor (`key:<id>`) for actorOf. Refuses with unauthorized (401, answered
 * with a WWW-Authenticate challenge by the error handler) when the key is missing, malformed,
 * unknown or revoked, and with forbidden (403) naming the role needed, never the roles held,
 * when the key lacks it. While the deployment has no active key, every request that arrived
 * on a loopback address passes as `anonymous` (see notLocal for what else that takes); any
 * other request is refused with auth_required (503), since the deployment would answer
 * anyone.
 */
export function requireRole(deployment: Deployment, role: Role): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const locals = res.locals as AuthLocals;

    if (!deployment.keys.hasActive()) {
      const why = notLocal(req);
      if (why !== null) {
        next(
          new ReidbError(
            'auth_required',
            `this deployment has no active API key, so it answers local requests only, and ${why}; ` +
              'create a key with `reidb keys create`',
          ),
        );
        return;
      }
      locals.actor = ANONYMOUS_ACTOR;
      locals.key = null;
      next();
      return;
    }

    const token = bearerToken(req);
    const key = token === null ? null : deployment.keys.authenticate(token);
    if (key === null) {
      next(unauthorized());
      return;
    }

    if (!key.roles.includes(role)) {
      next(
        new ReidbError('forbidden', `this route needs an API key with the '${role}' role`, {
          details: { role },
        }),
      );
      return;
    }

    locals.actor = `key:${key.id}`;
    locals.key = key;
    next();
  };
}

/**
 * The audit actor of a request that passed requireRole: `key:<id>` or `anonymous`. Throws
 * internal when the route was mounted without requireRole, so that such a route fails
 * instead of writing audit rows without an actor.
 */
export function actorOf(res: Response): string {
  const actor = (res.locals as AuthLocals).actor;
  if (typeof actor !== 'string') {
    throw new ReidbError('internal', 'route mounted without requireRole: no actor to audit');
  }
  return actor;
}

/** The key a request authenticated with, or null in open mode (after requireRole). */
export function keyOf(res: Response): KeyRecord | null {
  return (res.locals as AuthLocals).key ?? null;
}
