import type { RequestHandler } from 'express';

import { ReidbError } from '../errors.ts';
import { actorOf } from './auth.ts';

export interface RateLimitOptions {
  /** Requests a client may make per second, sustained. */
  perSecond: number;
  /** Requests a client may make at once after being idle (the bucket's size). */
  burst: number;
  /** Clock in ms; default Date.now. For tests. */
  now?: () => number;
}

/** Default: 50 requests a second per client, bursts of 100. */
export const DEFAULT_RATE_LIMIT = { perSecond: 50, burst: 100 } as const;

/** Clients tracked at once; beyond that the longest idle are forgotten (a full bucket). */
const MAX_CLIENTS = 10_000;

/**
 * A token bucket per client: per API key (`key:<id>`), or per remote address in open mode.
 * A request that finds the bucket empty is refused with 429 `rate_limited` and a Retry-After
 * (seconds until a token is back), before its body is read. Mounted after authentication, so
 * a request without a valid key is refused by that first and costs a client no token.
 */
export function createRateLimit(options: RateLimitOptions): RequestHandler {
  const { perSecond, burst } = options;
  if (!(perSecond > 0) || !Number.isInteger(burst) || burst < 1) {
    throw new ReidbError('invalid_argument', 'rate limit needs perSecond > 0 and burst >= 1', {
      input: 'rateLimit',
    });
  }
  const now = options.now ?? Date.now;
  const buckets = new Map<string, { tokens: number; at: number }>();

  return (req, res, next) => {
    const actor = actorOf(res);
    const client = actor === 'anonymous' ? `anonymous:${req.socket.remoteAddress}` : actor;
    const t = now();

    // Refill for the time since the last request, up to the burst.
    const bucket = buckets.get(client) ?? { tokens: burst, at: t };
    bucket.tokens = Math.min(burst, bucket.tokens + ((t - bucket.at) / 1000) * perSecond);
    bucket.at = t;
    buckets.delete(client);
    buckets.set(client, bucket);
    if (buckets.size > MAX_CLIENTS) buckets.delete(buckets.keys().next().value!);

    if (bucket.tokens < 1) {
      const retryAfterSeconds = Math.max(1, Math.ceil((1 - bucket.tokens) / perSecond));
      next(
        new ReidbError(
          'rate_limited',
          `too many requests from this client: at most ${perSecond} a second (bursts of ` +
            `${burst}); retry after ${retryAfterSeconds} s`,
          { details: { retryAfterSeconds, perSecond, burst } },
        ),
      );
      return;
    }
    bucket.tokens -= 1;
    next();
  };
}
