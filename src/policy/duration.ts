import { ReidbError } from '../errors.ts';

/** Seconds per unit, largest first (formatDuration picks the first that divides exactly). */
const UNITS: readonly (readonly [string, number])[] = [
  ['w', 7 * 24 * 3600],
  ['d', 24 * 3600],
  ['h', 3600],
  ['m', 60],
  ['s', 1],
];

const SECONDS_PER_UNIT = new Map(UNITS);

/** The longest duration accepted: 100 years of 365.25 days, in seconds. */
export const MAX_DURATION_SECONDS = 36525 * 86400;

/** A positive whole number without leading zeros, then one lower-case unit letter. */
const DURATION = /^([1-9][0-9]*)([smhdw])$/;

/** `text` as a message shows it: JSON-quoted (so control characters are visible), cut short. */
function shown(text: unknown): string {
  if (typeof text !== 'string') return String(text);
  return JSON.stringify(text.length > 40 ? text.slice(0, 40) + '...' : text);
}

const FORMS = "a positive whole number and a unit: '90s', '15m', '12h', '30d' or '52w'";

/**
 * Parses a duration written as a positive whole number and one unit: s (seconds), m
 * (minutes), h (hours), d (days of 24 h) or w (weeks), e.g. '90s', '15m', '12h', '30d',
 * '52w'. Returns seconds. Throws invalid_argument naming `input` and the accepted forms for
 * anything else (no spaces, signs, decimals, upper case or combined units) and for more than
 * 100 years.
 */
export function parseDuration(text: string, input = 'duration'): number {
  const match = typeof text === 'string' ? DURATION.exec(text) : null;
  if (match === null) {
    throw new ReidbError(
      'invalid_argument',
      `${input} ${shown(text)} is not a duration: use ${FORMS}`,
      {
        input,
      },
    );
  }

  const seconds = Number(match[1]) * SECONDS_PER_UNIT.get(match[2]!)!;
  if (!(seconds <= MAX_DURATION_SECONDS)) {
    throw new ReidbError(
      'invalid_argument',
      `${input} ${shown(text)} is longer than 100 years (${MAX_DURATION_SECONDS} s)`,
      { input, details: { maxSeconds: MAX_DURATION_SECONDS } },
    );
  }

  return seconds;
}

/**
 * Writes a whole number of seconds in the largest unit that divides it exactly: 604800 ->
 * '1w', 86400 * 30 -> '30d', 90 -> '90s', 0 -> '0s'. parseDuration reads back every positive
 * result. Throws invalid_argument for a negative or fractional number.
 */
export function formatDuration(seconds: number): string {
  if (!Number.isSafeInteger(seconds) || seconds < 0) {
    throw new ReidbError(
      'invalid_argument',
      `a duration must be whole seconds >= 0, not ${seconds}`,
      {
        input: 'seconds',
      },
    );
  }
  if (seconds === 0) return '0s';

  const [unit, size] = UNITS.find(([, size]) => seconds % size === 0)!;
  return `${seconds / size}${unit}`;
}
