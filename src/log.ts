/**
 * Loggers are passed in; library code never prints. `silentLogger` is the default everywhere.
 */
export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const noop = (): void => {};

export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };

/** A logger that writes one JSON line per event to a stream (stderr for the CLI and server). */
export function jsonLineLogger(
  write: (line: string) => void,
  minLevel: 'debug' | 'info' | 'warn' | 'error' = 'info',
): Logger {
  const order = { debug: 0, info: 1, warn: 2, error: 3 } as const;
  const emit =
    (level: keyof typeof order) =>
    (message: string, fields?: Record<string, unknown>): void => {
      if (order[level] < order[minLevel]) return;
      write(JSON.stringify({ time: new Date().toISOString(), level, message, ...fields }) + '\n');
    };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') };
}
