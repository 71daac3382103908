import { ReidbError } from '../errors.ts';

/** Flags a command accepts: `true` takes a value, `false` is a switch. */
export type FlagSpec = Record<string, boolean>;

export interface ParsedArgs {
  flags: Record<string, string | true>;
  positionals: string[];
}

/**
 * Parses `--name value`, `--name=value` and switches against a command's spec. An unknown
 * flag or a missing value is an invalid_argument error naming the flag (exit code 2).
 */
export function parseArgs(argv: string[], spec: FlagSpec): ParsedArgs {
  const flags: Record<string, string | true> = {};
  const positionals: string[] = [];

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }

    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (!(name in spec)) {
      throw new ReidbError('invalid_argument', `unknown option --${name}`, { input: `--${name}` });
    }
    if (!spec[name]) {
      if (eq >= 0) throw usage(`--${name} takes no value`, name);
      flags[name] = true;
      continue;
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || (eq < 0 && value.startsWith('--'))) {
      throw usage(`--${name} needs a value`, name);
    }
    flags[name] = value;
  }
  return { flags, positionals };
}

function usage(message: string, name: string): ReidbError {
  return new ReidbError('invalid_argument', message, { input: `--${name}` });
}

/** A string flag, or undefined. */
export function str(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags[name];
  return typeof v === 'string' ? v : undefined;
}

/** A required string flag. */
export function required(args: ParsedArgs, name: string): string {
  const v = str(args, name);
  if (v === undefined) throw usage(`--${name} is required`, name);
  return v;
}

/** An integer flag within [min, max]. */
export function int(args: ParsedArgs, name: string, min: number, max: number): number | undefined {
  const v = str(args, name);
  if (v === undefined) return undefined;
  const n = /^-?\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw usage(`--${name} must be an integer from ${min} to ${max}, got '${v}'`, name);
  }
  return n;
}

/** A number flag within [min, max]. */
export function num(args: ParsedArgs, name: string, min: number, max: number): number | undefined {
  const v = str(args, name);
  if (v === undefined) return undefined;
  const n = /^-?(\d+\.?\d*|\.\d+)(e-?\d+)?$/i.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < min || n > max) {
    throw usage(`--${name} must be a number from ${min} to ${max}, got '${v}'`, name);
  }
  return n;
}

/** A flag restricted to a set of words. */
export function oneOf<T extends string>(
  args: ParsedArgs,
  name: string,
  words: readonly T[],
): T | undefined {
  const v = str(args, name);
  if (v === undefined) return undefined;
  if (!words.includes(v as T)) {
    throw usage(`--${name} must be one of ${words.join(', ')}, got '${v}'`, name);
  }
  return v as T;
}
