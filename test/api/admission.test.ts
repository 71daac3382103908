import { EventEmitter } from 'node:events';

import test from 'ava';
import type { NextFunction, Request, Response } from 'express';

import { createAdmission, defaultMaxInFlight, type Admission } from '../../src/api/admission.ts';
import { ReidbError } from '../../src/errors.ts';

/** A fake request/response pair and what the middleware did with it. */
interface Call {
  res: Response & EventEmitter;
  /** True once the middleware let the request through to the handler. */
  started: boolean;
  /** The error passed to next(), if the request was refused. */
  error?: unknown;
}

/** Runs the middleware on a fake request, as express would. */
function arrive(admission: Admission, path = '/v1/search'): Call {
  const res = Object.assign(new EventEmitter(), {
    end(this: EventEmitter) {
      this.emit('finish');
      this.emit('close');
      return this;
    },
  }) as unknown as Response & EventEmitter;
  const call: Call = { res, started: false };
  const next: NextFunction = (error?: unknown) => {
    if (error === undefined) call.started = true;
    else call.error = error;
  };
  admission.middleware({ path } as Request, res, next);
  return call;
}

/** Lets the controller start waiting requests (it does so on the next tick). */
const tick = () => new Promise((resolve) => setImmediate(resolve));

test('admits maxInFlight, queues maxQueued and refuses the rest as overloaded', (t) => {
  const admission = createAdmission({ maxInFlight: 2, maxQueued: 3 });
  const calls = Array.from({ length: 7 }, () => arrive(admission));

  t.deepEqual(
    calls.map((c) => c.started),
    [true, true, false, false, false, false, false],
  );
  t.deepEqual(admission.stats(), { inFlight: 2, queued: 3, refused: 2 });

  for (const refused of calls.slice(5)) {
    t.true(refused.error instanceof ReidbError);
    const error = refused.error as ReidbError;
    t.is(error.code, 'overloaded');
    t.is(error.input, '/v1/search');
    t.deepEqual(error.details, { maxInFlight: 2, maxQueued: 3, retryAfterSeconds: 1 });
    t.regex(error.message, /2 requests running, 3 waiting/);
  }
  t.is(calls[2].error, undefined);
});

test('a finished request starts the oldest waiting one', async (t) => {
  const admission = createAdmission({ maxInFlight: 1, maxQueued: 2 });
  const [first, second, third] = [arrive(admission), arrive(admission), arrive(admission)];
  t.true(first.started);

  first.res.end();
  await tick();
  t.true(second.started);
  t.false(third.started);
  t.deepEqual(admission.stats(), { inFlight: 1, queued: 1, refused: 0 });

  // end() twice, or end() followed by the socket closing, frees the slot once.
  second.res.end();
  second.res.end();
  await tick();
  t.true(third.started);
  third.res.end();
  await tick();
  t.deepEqual(admission.stats(), { inFlight: 0, queued: 0, refused: 0 });
});

test('a newcomer does not overtake requests that are already waiting', async (t) => {
  const admission = createAdmission({ maxInFlight: 1, maxQueued: 1 });
  const first = arrive(admission);
  const waiting = arrive(admission);

  // The slot is free now, but the waiting request has not been started yet.
  first.res.end();
  const late = arrive(admission);
  t.is((late.error as ReidbError).code, 'overloaded');

  await tick();
  t.true(waiting.started);
});

test('a waiting request whose client disconnects leaves the queue', async (t) => {
  const admission = createAdmission({ maxInFlight: 1, maxQueued: 2 });
  const first = arrive(admission);
  const gone = arrive(admission);
  const kept = arrive(admission);

  gone.res.emit('close');
  t.deepEqual(admission.stats(), { inFlight: 1, queued: 1, refused: 0 });

  first.res.end();
  await tick();
  t.false(gone.started);
  t.true(kept.started);
});

test('a running request keeps its slot after its client disconnects, until it ends', async (t) => {
  const admission = createAdmission({ maxInFlight: 1, maxQueued: 1 });
  const running = arrive(admission);
  const waiting = arrive(admission);

  // The engine is still analysing the upload: the slot stays taken.
  running.res.emit('close');
  await tick();
  t.false(waiting.started);
  t.is(admission.stats().inFlight, 1);

  // The handler answers into the closed connection ('finish' never comes): that frees it.
  running.res.emit = () => false;
  running.res.end();
  await tick();
  t.true(waiting.started);
});

test('maxQueued 0 refuses every request beyond those running', (t) => {
  const admission = createAdmission({ maxInFlight: 1, maxQueued: 0, retryAfterSeconds: 5 });
  t.true(arrive(admission).started);
  const refused = arrive(admission).error as ReidbError;
  t.is(refused.code, 'overloaded');
  t.is(refused.details?.retryAfterSeconds, 5);
  t.regex(refused.message, /retry after 5 s/);
});

test('limits must be integers, maxInFlight at least 1', (t) => {
  for (const options of [
    { maxInFlight: 0, maxQueued: 1 },
    { maxInFlight: 1.5, maxQueued: 1 },
    { maxInFlight: 2, maxQueued: -1 },
    { maxInFlight: Number.NaN, maxQueued: 1 },
  ]) {
    const error = t.throws(() => createAdmission(options), { instanceOf: ReidbError });
    t.is(error?.code, 'invalid_argument');
  }
});

test('the default concurrency is two requests per engine worker, at least two', (t) => {
  t.is(defaultMaxInFlight(1), 2);
  t.is(defaultMaxInFlight(2), 4);
  t.is(defaultMaxInFlight(4), 8);
});
