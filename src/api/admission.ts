/**
 * Admission control for the routes that run the face engine (enrolment and search). A burst
 * of requests must not buffer N uploads of up to maxUploadBytes each nor queue unbounded work
 * on the worker pool, so the controller lets at most `maxInFlight` requests run at once, keeps
 * at most `maxQueued` more waiting in arrival order, and refuses the rest at once with
 * ReidbError('overloaded') (HTTP 503 with a Retry-After header), before their body is read.
 *
 * A request holds its slot from admission until its response is ended, whether or not the
 * client is still there: the engine keeps analysing an upload whose client has gone, so freeing
 * the slot on disconnect would let a client that uploads and hangs up pile work on the pool.
 * A request that is still waiting when its client disconnects leaves the queue.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';

import { ReidbError } from '../errors.ts';

export interface AdmissionOptions {
  /** Requests that may run at once (body upload and engine work). A positive integer. */
  maxInFlight: number;
  /** Requests that may wait for a free slot; 0 refuses every request beyond maxInFlight. */
  maxQueued: number;
  /** Seconds a refused client is told to wait before retrying (Retry-After). Default 1. */
  retryAfterSeconds?: number;
}

export interface AdmissionStats {
  /** Requests admitted whose response has not ended yet. */
  inFlight: number;
  /** Requests waiting for a slot. */
  queued: number;
  /** Requests refused as overloaded since the controller was created. */
  refused: number;
}

export interface Admission {
  /** Express middleware to mount on a route before anything reads the request body. */
  middleware: RequestHandler;
  stats(): AdmissionStats;
}

/** Default queue length: requests that may wait behind the running ones. */
export const DEFAULT_MAX_QUEUED = 32;

/** Default concurrency: two requests per engine worker (one uploading while one is analysed). */
export function defaultMaxInFlight(workers: number): number {
  return Math.max(2, 2 * workers);
}

interface Waiter {
  res: Response;
  next: NextFunction;
  onGone: () => void;
}

/**
 * Creates an admission controller. Throws invalid_argument when a limit is not a
 * non-negative integer (maxInFlight at least 1).
 */
export function createAdmission(options: AdmissionOptions): Admission {
  const maxInFlight = checkCount(options.maxInFlight, 1, 'maxInFlight');
  const maxQueued = checkCount(options.maxQueued, 0, 'maxQueued');
  const retryAfterSeconds = checkCount(options.retryAfterSeconds ?? 1, 1, 'retryAfterSeconds');
  const queue: Waiter[] = [];
  let inFlight = 0;
  let refused = 0;

  /** Takes a slot for `res` and frees it when the response is ended. */
  function admit(res: Response): void {
    inFlight++;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      inFlight--;
      // Not from inside the finished request's end(): the next one starts on a clean stack.
      process.nextTick(drain);
    };

    // 'finish' never comes when the client has gone before the answer: the socket is closed
    // and nothing is flushed. The handler calling end() is then the only sign it is done.
    const end = res.end;
    res.end = function (this: Response, ...args: unknown[]) {
      release();
      return (end as (...a: unknown[]) => Response).apply(this, args);
    } as Response['end'];
    res.once('finish', release);
  }

  /** Starts waiting requests, oldest first, while slots are free. */
  function drain(): void {
    while (inFlight < maxInFlight && queue.length > 0) {
      const waiter = queue.shift()!;
      waiter.res.removeListener('close', waiter.onGone);
      admit(waiter.res);
      waiter.next();
    }
  }

  const middleware: RequestHandler = (req: Request, res: Response, next: NextFunction) => {
    // A newcomer does not overtake the queue, even when a slot has just been freed.
    if (inFlight < maxInFlight && queue.length === 0) {
      admit(res);
      next();
      return;
    }

    if (queue.length < maxQueued) {
      const waiter: Waiter = {
        res,
        next,
        onGone: () => {
          const index = queue.indexOf(waiter);
          if (index >= 0) queue.splice(index, 1);
        },
      };
      // The response closes before it was ever started only when the client disconnected.
      res.once('close', waiter.onGone);
      queue.push(waiter);
      return;
    }

    refused++;
    next(
      new ReidbError(
        'overloaded',
        `the server is busy (${inFlight} requests running, ${queue.length} waiting); ` +
          `retry after ${retryAfterSeconds} s`,
        { input: req.path, details: { maxInFlight, maxQueued, retryAfterSeconds } },
      ),
    );
  };

  return {
    middleware,
    stats: () => ({ inFlight, queued: queue.length, refused }),
  };
}

function checkCount(value: number, min: number, what: string): number {
  if (!Number.isInteger(value) || value < min) {
    throw new ReidbError('invalid_argument', `${what} must be an integer >= ${min}, got ${value}`, {
      input: what,
    });
  }
  return value;
}
