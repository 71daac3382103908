import { ReidbError } from '../errors.ts';
import type { Gallery } from '../gallery/gallery.ts';
import { silentLogger, type Logger } from '../log.ts';
import { runRetention, type RetentionSummary } from './retention.ts';

/** Delay before the first run after start, in ms, unless the interval is shorter. */
export const FIRST_RUN_DELAY_MS = 5_000;

/** Longest delay one Node timer takes, in ms (about 24.8 days); longer waits are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RetentionScheduleOptions {
  /** Time from the end of one run to the start of the next, in ms; at least 1. */
  intervalMs: number;
  /** Default silentLogger. */
  logger?: Logger;
  /** Time from start to the first run, in ms; default min(5000, intervalMs). */
  firstDelayMs?: number;
  /** Called after each run that did not fail (for tests and metrics). */
  onRun?: (summary: RetentionSummary) => void;
}

/**
 * Runs the retention job on `gallery` in the background, as the server does: a first run
 * shortly after start, then one every `intervalMs` counted from the end of the previous run,
 * so runs never overlap. The timers are unref'd and never keep the process alive. A run that
 * fails is logged as an error and the schedule goes on; no run ever throws. `stop()` cancels
 * the next run (call it before closing the gallery). Throws invalid_argument at start only
 * for an interval that is not a number of ms >= 1.
 */
export function startRetentionSchedule(
  gallery: Gallery,
  options: RetentionScheduleOptions,
): { stop(): void } {
  const logger = options.logger ?? silentLogger;
  const intervalMs = options.intervalMs;
  if (!Number.isFinite(intervalMs) || intervalMs < 1) {
    throw new ReidbError('invalid_argument', `intervalMs must be a number of ms >= 1`, {
      input: 'intervalMs',
    });
  }

  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  let running = false;

  const schedule = (delayMs: number): void => {
    const due = Date.now() + delayMs;
    const arm = (): void => {
      if (stopped) return;
      const left = due - Date.now();
      timer = setTimeout(left <= 0 ? tick : arm, Math.max(0, Math.min(left, MAX_TIMER_MS)));
      timer.unref();
    };
    arm();
  };

  const tick = (): void => {
    timer = null;
    if (stopped || running) return;

    running = true;
    try {
      const summary = runRetention(gallery);
      if (summary.facesErased > 0) {
        logger.info('retention erased expired faces', {
          faces: summary.facesErased,
          identities: summary.identitiesDue,
          identitiesRemoved: summary.identitiesErased,
        });
      } else {
        logger.debug('retention found nothing due', { checkedAt: summary.checkedAt });
      }
      options.onRun?.(summary);
    } catch (cause) {
      logger.error('retention run failed; it is retried at the next interval', {
        error: (cause as Error)?.message ?? String(cause),
      });
    } finally {
      running = false;
    }

    schedule(intervalMs);
  };

  schedule(options.firstDelayMs ?? Math.min(FIRST_RUN_DELAY_MS, intervalMs));

  return {
    stop(): void {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}
