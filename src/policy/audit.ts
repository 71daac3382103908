import { createHash } from 'node:crypto';

import type Database from 'better-sqlite3';

import { ReidbError } from '../errors.ts';
import {
  AUDIT_ACTIONS,
  type AuditAction,
  type AuditFilter,
  type AuditRow,
  type AuditVerification,
} from './types.ts';

/**
 * The append-only, hash-chained audit trail (table audit_log of deployment.sqlite).
 *
 * No biometric data goes in: no image, no face crop, no embedding or other vector, and no
 * identity label, only the pseudonymous identity reference (Deployment.identityRef). Details
 * are counts, outcomes and parameters. As a guard against mistakes, `append` refuses details
 * that hold binary data (Buffer, typed arrays) or an array of more than 64 numbers, which is
 * what a vector would look like.
 *
 * Row n's hash is the hex SHA-256 of `prevHash + '\n' + canonicalJson([seq, at, actor,
 * action, identityRef, details])`, where prevHash is row n-1's hash (64 zeros for row 1) and
 * canonicalJson sorts object keys. Triggers refuse UPDATE and DELETE, and any INSERT whose seq
 * is not the last seq + 1.
 */

/** prevHash of the first row. */
export const GENESIS_HASH = '0'.repeat(64);

/** A pseudonymous identity reference: 'ref_' + 24 hex digits. */
export const IDENTITY_REF_PATTERN = /^ref_[0-9a-f]{24}$/;

/** Most numbers an array in the details may hold (nested arrays counted together). */
const MAX_ARRAY_NUMBERS = 64;

/** Deepest nesting of objects and arrays in the details. */
const MAX_DEPTH = 16;

/** Longest canonical JSON of one row's details, in characters. */
const MAX_DETAILS_CHARS = 64 * 1024;

/** Longest actor, in characters. */
const MAX_ACTOR = 200;

/** Control characters, line separators and lone surrogates (these would not survive UTF-8). */
const UNSAFE_TEXT = /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}]/u;

const CSV_HEADER = ['seq', 'at', 'actor', 'action', 'identity_ref', 'details', 'prev_hash', 'hash'];

interface LogRow {
  seq: number;
  at: string;
  actor: string;
  action: string;
  identity_ref: string | null;
  details: string;
  prev_hash: string;
  hash: string;
}

const COLUMNS = 'seq, at, actor, action, identity_ref, details, prev_hash, hash';

/**
 * JSON with the keys of every object sorted (by UTF-16 code units), no spaces: one text for
 * one value however its keys were ordered. The value must be plain JSON (see checkDetails).
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return '[' + value.map(canonicalJson).join(',') + ']';

  if (value !== null && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record).sort();
    return (
      '{' + keys.map((k) => JSON.stringify(k) + ':' + canonicalJson(record[k])).join(',') + '}'
    );
  }

  return JSON.stringify(value);
}

/** The hex SHA-256 that row content must carry, given the previous row's hash. */
export function rowHash(
  prevHash: string,
  row: Pick<AuditRow, 'seq' | 'at' | 'actor' | 'action' | 'identityRef' | 'details'>,
): string {
  const content = canonicalJson([
    row.seq,
    row.at,
    row.actor,
    row.action,
    row.identityRef,
    row.details,
  ]);
  return createHash('sha256')
    .update(prevHash + '\n' + content, 'utf8')
    .digest('hex');
}

function badDetails(message: string): ReidbError {
  return new ReidbError('invalid_argument', `audit details ${message}`, { input: 'details' });
}

function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** How many numbers an array holds, counting those in nested arrays too. */
function countNumbers(values: unknown[], depth: number): number {
  if (depth > MAX_DEPTH) throw badDetails(`nest deeper than ${MAX_DEPTH} levels`);

  let count = 0;
  for (const value of values) {
    if (typeof value === 'number') count++;
    else if (Array.isArray(value)) count += countNumbers(value, depth + 1);
  }
  return count;
}

/** Throws invalid_argument unless `value` (at `where`) is plain JSON with no vector in it. */
function checkJson(value: unknown, where: string, depth: number): void {
  if (depth > MAX_DEPTH) throw badDetails(`nest deeper than ${MAX_DEPTH} levels`);

  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw badDetails(`hold a non-finite number at ${where}`);
    return;
  }
  if (typeof value !== 'object') throw badDetails(`hold a ${typeof value} at ${where}`);

  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
    throw badDetails(
      `hold binary data (${value.constructor.name}) at ${where}; the audit trail must not ` +
        `hold vectors, images or other biometric data`,
    );
  }
  if (Array.isArray(value)) {
    const numbers = countNumbers(value, depth);
    if (numbers > MAX_ARRAY_NUMBERS) {
      throw badDetails(
        `hold an array of ${numbers} numbers at ${where} (at most ${MAX_ARRAY_NUMBERS}); ` +
          `the audit trail must not hold vectors or other biometric data`,
      );
    }
    value.forEach((item, i) => checkJson(item, `${where}[${i}]`, depth + 1));
    return;
  }
  if (!isPlainObject(value)) {
    throw badDetails(`hold a ${value.constructor?.name ?? 'non-plain'} object at ${where}`);
  }
  for (const [key, item] of Object.entries(value)) {
    checkJson(item, `${where}.${key}`, depth + 1);
  }
}

/**
 * Throws invalid_argument (input 'details') unless `details` is a plain object of plain JSON
 * values (null, booleans, finite numbers, strings, arrays, plain objects; no undefined) with no
 * binary data, no array of more than 64 numbers, at most 16 levels deep and at most 64 KiB of
 * canonical JSON.
 */
export function checkDetails(details: unknown): asserts details is Record<string, unknown> {
  if (details === null || typeof details !== 'object' || Array.isArray(details)) {
    throw badDetails('must be a plain object');
  }
  checkJson(details, 'details', 0);

  const size = canonicalJson(details).length;
  if (size > MAX_DETAILS_CHARS) {
    throw badDetails(`are ${size} characters of JSON; at most ${MAX_DETAILS_CHARS} are allowed`);
  }
}

function checkActor(actor: unknown): asserts actor is string {
  if (typeof actor !== 'string' || actor.length === 0 || actor.length > MAX_ACTOR) {
    throw new ReidbError('invalid_argument', `actor must be 1 to ${MAX_ACTOR} characters`, {
      input: 'actor',
    });
  }
  if (UNSAFE_TEXT.test(actor)) {
    throw new ReidbError('invalid_argument', 'actor holds a control character', {
      input: 'actor',
    });
  }
}

/** Throws invalid_argument unless `ref` is a pseudonymous reference ('ref_' + 24 hex). */
export function checkIdentityRef(ref: unknown, input = 'identityRef'): asserts ref is string {
  if (typeof ref !== 'string' || !IDENTITY_REF_PATTERN.test(ref)) {
    throw new ReidbError(
      'invalid_argument',
      `${input} must be a pseudonymous reference ('ref_' + 24 hex digits, from ` +
        `Deployment.identityRef), never an identity label`,
      { input },
    );
  }
}

function toRow(row: LogRow): AuditRow {
  let details: Record<string, unknown>;
  try {
    details = JSON.parse(row.details) as Record<string, unknown>;
  } catch (cause) {
    throw new ReidbError('audit_tampered', `audit row ${row.seq} holds details that are not JSON`, {
      input: `seq ${row.seq}`,
      cause,
    });
  }

  return {
    seq: row.seq,
    at: row.at,
    actor: row.actor,
    action: row.action as AuditAction,
    identityRef: row.identity_ref,
    details,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

function positiveInteger(value: number | undefined, input: string): void {
  if (value !== undefined && !(Number.isSafeInteger(value) && value >= 1)) {
    throw new ReidbError('invalid_argument', `${input} must be a whole number >= 1`, { input });
  }
}

/** One CSV cell: formula guard first, then RFC 4180 quoting. */
function csvCell(value: string): string {
  // A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
  const guarded = /^[=+\-@\t\r]/.test(value) ? "'" + value : value;
  return /[",\r\n]/.test(guarded) ? '"' + guarded.replaceAll('"', '""') + '"' : guarded;
}

/**
 * Rows as CSV (RFC 4180: CRLF line ends, fields with a comma, quote or line break quoted,
 * quotes doubled): the header `seq,at,actor,action,identity_ref,details,prev_hash,hash`, then
 * one line per row, details as canonical JSON and a null identity_ref as an empty field. A
 * cell that starts with = + - @ (or a tab or CR) gets a leading apostrophe, so that a
 * spreadsheet shows it as text instead of running it as a formula.
 */
export function auditRowsToCsv(rows: AuditRow[]): string {
  const lines = [CSV_HEADER.join(',')];
  for (const row of rows) {
    const cells = [
      String(row.seq),
      row.at,
      row.actor,
      row.action,
      row.identityRef ?? '',
      canonicalJson(row.details),
      row.prevHash,
      row.hash,
    ];
    lines.push(cells.map(csvCell).join(','));
  }
  return lines.join('\r\n') + '\r\n';
}

/** The audit trail of a deployment; see the comment at the top of audit.ts. */
export class AuditTrail {
  readonly #db: Database.Database;
  readonly #now: () => Date;

  /** Use Deployment.audit. */
  constructor(db: Database.Database, now: () => Date) {
    this.#db = db;
    this.#now = now;
  }

  /**
   * Appends one row in one IMMEDIATE transaction: reads the last row, then writes seq =
   * last + 1 chained to its hash, so two processes appending at once keep one chain. `actor`
   * is 1 to 200 characters; `identityRef` a pseudonymous reference or null; `details` plain
   * JSON (see checkDetails). Throws invalid_argument naming the bad field. Returns the row.
   */
  append(entry: {
    actor: string;
    action: AuditAction;
    identityRef?: string | null;
    details?: Record<string, unknown>;
  }): AuditRow {
    checkActor(entry.actor);
    if (!AUDIT_ACTIONS.includes(entry.action)) {
      throw new ReidbError(
        'invalid_argument',
        `unknown audit action '${String(entry.action)}'; known: ${AUDIT_ACTIONS.join(', ')}`,
        { input: 'action' },
      );
    }
    const identityRef = entry.identityRef ?? null;
    if (identityRef !== null) checkIdentityRef(identityRef);
    const details = entry.details ?? {};
    checkDetails(details);

    // Stored as it is hashed, so a copy changed by the caller later cannot matter.
    const detailsJson = canonicalJson(details);
    const last = this.#db.prepare('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1');
    const insert = this.#db.prepare(
      `INSERT INTO audit_log (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    );

    return this.#db
      .transaction((): AuditRow => {
        const previous = last.get() as { seq: number; hash: string } | undefined;
        const row: AuditRow = {
          seq: (previous?.seq ?? 0) + 1,
          at: this.#now().toISOString(),
          actor: entry.actor,
          action: entry.action,
          identityRef,
          details: JSON.parse(detailsJson) as Record<string, unknown>,
          prevHash: previous?.hash ?? GENESIS_HASH,
          hash: '',
        };
        row.hash = rowHash(row.prevHash, row);

        insert.run(
          row.seq,
          row.at,
          row.actor,
          row.action,
          row.identityRef,
          detailsJson,
          row.prevHash,
          row.hash,
        );
        return row;
      })
      .immediate();
  }

  /**
   * Rows in seq order: all of them, or only those about `identityRef` (its own rows and the
   * searches that returned it), from seq `fromSeq` on, at most `limit`. Throws
   * invalid_argument naming a bad filter field.
   */
  rows(filter: AuditFilter = {}): AuditRow[] {
    positiveInteger(filter.fromSeq, 'fromSeq');
    positiveInteger(filter.limit, 'limit');
    if (filter.identityRef !== undefined) checkIdentityRef(filter.identityRef);

    const where: string[] = ['seq >= ?'];
    const params: (string | number)[] = [filter.fromSeq ?? 1];
    if (filter.identityRef !== undefined) {
      // Rows about the identity, and searches that returned it (details.matchedRefs).
      where.push(
        `(identity_ref = ? OR (action = 'search' AND EXISTS (
           SELECT 1 FROM json_each(details, '$.matchedRefs') WHERE value = ?)))`,
      );
      params.push(filter.identityRef, filter.identityRef);
    }
    const limit = filter.limit === undefined ? '' : ` LIMIT ${filter.limit}`;

    const rows = this.#db
      .prepare(`SELECT ${COLUMNS} FROM audit_log WHERE ${where.join(' AND ')} ORDER BY seq${limit}`)
      .all(...params) as LogRow[];
    return rows.map(toRow);
  }

  /**
   * Walks the whole trail in seq order and checks that seqs run 1, 2, 3, ... with no gap (a
   * removed row), that each row's hash matches its content (an edited row) and that each
   * prevHash is the previous row's hash (an inserted or replaced row). Reports the number of
   * rows, the first bad row and why, in words, and the head (the newest row's hash) to keep
   * elsewhere: removing the newest rows, or rewriting the whole chain, is only found by
   * comparing with a head kept outside.
   */
  verify(): AuditVerification {
    const statement = this.#db.prepare(`SELECT ${COLUMNS} FROM audit_log ORDER BY seq`);
    let count = 0;
    let previous: string | null = null;
    let firstBad: { seq: number; reason: string } | undefined;

    for (const row of statement.iterate() as Iterable<LogRow>) {
      count++;
      const bad = checkRow(row, count, previous);
      if (bad !== null) {
        // Leaving the loop ends the iteration and releases the statement.
        firstBad = { seq: bad.seq ?? row.seq, reason: bad.reason };
        break;
      }
      previous = row.hash;
    }
    if (firstBad === undefined) return { ok: true, rows: count, head: previous };

    const tail = this.#db
      .prepare(
        `SELECT count(*) AS rows,
                (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS head
           FROM audit_log`,
      )
      .get() as { rows: number; head: string | null };
    return { ok: false, rows: tail.rows, head: tail.head, firstBad };
  }

  /** Like verify, but throws audit_tampered naming the first bad row when it is not ok. */
  assertIntact(): AuditVerification {
    const result = this.verify();
    if (!result.ok) {
      throw new ReidbError(
        'audit_tampered',
        `the audit trail does not verify: ${result.firstBad!.reason}`,
        {
          input: `seq ${result.firstBad!.seq}`,
          details: { seq: result.firstBad!.seq, rows: result.rows },
        },
      );
    }
    return result;
  }

  /** Rows as CSV for an officer; see auditRowsToCsv. */
  toCsv(rows: AuditRow[]): string {
    return auditRowsToCsv(rows);
  }
}

/**
 * Why `row` (expected to be row `expected`, after a row whose hash is `previous`) does not
 * verify, or null when it does. A gap is reported as the first missing seq.
 */
function checkRow(
  row: LogRow,
  expected: number,
  previous: string | null,
): { seq?: number; reason: string } | null {
  if (row.seq !== expected) {
    const reason =
      expected === 1
        ? `row 1 is missing: the trail starts at row ${row.seq} (rows were removed)`
        : `row ${expected} is missing: the trail jumps from row ${expected - 1} to row ` +
          `${row.seq} (a row was removed)`;
    return { seq: expected, reason };
  }

  let details: Record<string, unknown>;
  try {
    details = JSON.parse(row.details) as Record<string, unknown>;
  } catch {
    return { reason: `row ${row.seq}: its details are not JSON (edited after it was written)` };
  }
  // Rows are stored exactly as they were hashed; any other spelling of the same JSON (a
  // duplicate key that SQLite's JSON functions would read differently, added white space) is
  // an edit too.
  if (canonicalJson(details) !== row.details) {
    return {
      reason: `row ${row.seq}: its details are not stored as they were hashed (edited after it was written)`,
    };
  }
  const content = {
    seq: row.seq,
    at: row.at,
    actor: row.actor,
    action: row.action as AuditAction,
    identityRef: row.identity_ref,
    details,
  };
  if (rowHash(row.prev_hash, content) !== row.hash) {
    return {
      reason: `row ${row.seq}: its hash does not match its content (edited after it was written)`,
    };
  }

  const wanted = previous ?? GENESIS_HASH;
  if (row.prev_hash !== wanted) {
    const what =
      previous === null ? '64 zeros, as the first row' : `the hash of row ${row.seq - 1}`;
    return {
      reason:
        `row ${row.seq}: its prev_hash is not ${what} (a row was inserted, replaced or ` +
        `re-hashed before it)`,
    };
  }

  return null;
}
