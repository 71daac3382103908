/**
 * The one domain error type of reidb. Every failure that crosses a module boundary is a
 * ReidbError with a stable `code`; the HTTP layer (src/api/http-errors.ts) and the CLI
 * (src/cli/exit-codes.ts) map codes to status and exit codes, each in one place.
 */
export type ErrorCode =
  // image intake
  | 'empty_file'
  | 'not_an_image'
  | 'unsupported_image'
  | 'corrupt_image'
  | 'image_too_large'
  | 'file_not_found'
  // face pipeline
  | 'no_face'
  | 'ambiguous_face'
  // models
  | 'model_missing'
  | 'model_corrupt'
  | 'model_mismatch'
  // gallery
  | 'identity_not_found'
  | 'invalid_identity'
  | 'gallery_mismatch'
  | 'gallery_corrupt'
  | 'gallery_locked'
  | 'gallery_not_found'
  | 'conflict'
  // access, policy and compliance
  | 'unauthorized'
  | 'forbidden'
  | 'auth_required'
  | 'key_not_found'
  | 'audit_tampered'
  | 'export_invalid'
  // requests and arguments
  | 'invalid_argument'
  | 'overloaded'
  | 'rate_limited'
  | 'shutting_down'
  | 'closed'
  | 'port_in_use'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'not_found'
  | 'internal';

export interface ReidbErrorOptions {
  /** The file name, identity or parameter the error is about. */
  input?: string;
  cause?: unknown;
  /** Extra machine-readable facts (limits, counts) for JSON error bodies. */
  details?: Record<string, unknown>;
}

export class ReidbError extends Error {
  readonly code: ErrorCode;
  readonly input?: string;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: ReidbErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ReidbError';
    this.code = code;
    this.input = options.input;
    this.details = options.details;
  }

  /** Plain object for JSON output: `{code, message, input?, details?}`. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { code: this.code, message: this.message };
    if (this.input !== undefined) out.input = this.input;
    if (this.details !== undefined) out.details = this.details;
    return out;
  }
}

export function isReidbError(value: unknown): value is ReidbError {
  return value instanceof ReidbError;
}

/** Wraps anything thrown into a ReidbError, keeping an existing one as it is. */
export function toReidbError(value: unknown, input?: string): ReidbError {
  if (value instanceof ReidbError) return value;
  const message = value instanceof Error ? value.message : String(value);
  // better-sqlite3 reports a damaged database file with these SQLite result codes.
  const sqlite = (value as { code?: unknown } | null)?.code;
  if (typeof sqlite === 'string' && /^SQLITE_(CORRUPT|NOTADB)/.test(sqlite)) {
    return new ReidbError('gallery_corrupt', `the gallery database is damaged: ${message}`, {
      input,
      cause: value,
    });
  }
  return new ReidbError('internal', message, { input, cause: value });
}
