import type Database from 'better-sqlite3';

import { ReidbError } from '../errors.ts';
import { checkIdentityRef } from './audit.ts';
import type { ErasureReason, LedgerEntry } from './types.ts';

/** Uids per `IN (...)` lookup: well under SQLite's limit of 32766 bound parameters. */
const CHUNK = 500;

/** Longest face uid or actor, in characters. */
const MAX_TEXT = 200;

/** Control characters, line separators and lone surrogates. */
const UNSAFE_TEXT = /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}]/u;

interface LedgerRow {
  face_uid: string;
  identity_ref: string;
  erased_at: string;
  reason: ErasureReason;
  actor: string;
}

function checkText(value: unknown, input: string): asserts value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_TEXT) {
    throw new ReidbError('invalid_argument', `${input} must be 1 to ${MAX_TEXT} characters`, {
      input,
    });
  }
  if (UNSAFE_TEXT.test(value)) {
    throw new ReidbError('invalid_argument', `${input} holds a control character`, { input });
  }
}

/**
 * The erasure ledger (table erasure_ledger of deployment.sqlite): the uid of every face ever
 * erased, on request or by retention. The gallery deletes, at every open and at every import,
 * any face whose uid is here, so an old backup or export never brings an erased face back.
 * Rows are never changed or removed (the schema's triggers refuse it).
 */
export class ErasureLedger {
  readonly #db: Database.Database;
  readonly #now: () => Date;

  /** Use Deployment.ledger. */
  constructor(db: Database.Database, now: () => Date) {
    this.#db = db;
    this.#now = now;
  }

  /**
   * Records the erasure of an identity's faces, one row per face uid, in one transaction.
   * A uid already recorded keeps its first row, so recording twice (a retried erasure) is
   * harmless. `erasedAt` is ISO-8601 UTC, default now. Throws invalid_argument naming the bad
   * field.
   */
  record(entry: {
    identityRef: string;
    faceUids: string[];
    reason: ErasureReason;
    actor: string;
    erasedAt?: string;
  }): void {
    checkIdentityRef(entry.identityRef);
    if (entry.reason !== 'erase' && entry.reason !== 'retention') {
      throw new ReidbError(
        'invalid_argument',
        `erasure reason must be 'erase' or 'retention', not '${String(entry.reason)}'`,
        { input: 'reason' },
      );
    }
    checkText(entry.actor, 'actor');
    if (!Array.isArray(entry.faceUids)) {
      throw new ReidbError('invalid_argument', 'faceUids must be an array of face uids', {
        input: 'faceUids',
      });
    }
    entry.faceUids.forEach((uid, i) => checkText(uid, `faceUids[${i}]`));
    const erasedAt = entry.erasedAt ?? this.#now().toISOString();
    if (typeof erasedAt !== 'string' || Number.isNaN(Date.parse(erasedAt))) {
      throw new ReidbError('invalid_argument', 'erasedAt must be an ISO-8601 time', {
        input: 'erasedAt',
      });
    }

    const insert = this.#db.prepare(
      `INSERT OR IGNORE INTO erasure_ledger (face_uid, identity_ref, erased_at, reason, actor)
       VALUES (?, ?, ?, ?, ?)`,
    );
    this.#db
      .transaction(() => {
        for (const uid of entry.faceUids) {
          insert.run(uid, entry.identityRef, erasedAt, entry.reason, entry.actor);
        }
      })
      .immediate();
  }

  /**
   * Which of `uids` are in the ledger. Looks them up by primary key in chunks of 500 inside
   * one read transaction (one consistent snapshot); 100 000 uids take well under a second.
   */
  erasedAmong(uids: string[]): Set<string> {
    const unique = [...new Set(uids)];
    const found = new Set<string>();
    if (unique.length === 0) return found;

    const full = this.#lookup(CHUNK);
    this.#db.transaction(() => {
      for (let start = 0; start < unique.length; start += CHUNK) {
        const chunk = unique.slice(start, start + CHUNK);
        const statement = chunk.length === CHUNK ? full : this.#lookup(chunk.length);
        for (const uid of statement.all(...chunk) as string[]) found.add(uid);
      }
    })();

    return found;
  }

  /**
   * The erasures, one entry per identity reference and erasure time (with reason and actor),
   * oldest first; each entry's face uids sorted.
   */
  entries(): LedgerEntry[] {
    const rows = this.#db
      .prepare(
        `SELECT face_uid, identity_ref, erased_at, reason, actor FROM erasure_ledger
          ORDER BY erased_at, identity_ref, reason, actor, face_uid`,
      )
      .all() as LedgerRow[];

    const entries: LedgerEntry[] = [];
    let current: LedgerEntry | undefined;
    for (const row of rows) {
      const same =
        current !== undefined &&
        current.identityRef === row.identity_ref &&
        current.erasedAt === row.erased_at &&
        current.reason === row.reason &&
        current.actor === row.actor;
      if (!same) {
        current = {
          identityRef: row.identity_ref,
          faceUids: [],
          erasedAt: row.erased_at,
          reason: row.reason,
          actor: row.actor,
        };
        entries.push(current);
      }
      current!.faceUids.push(row.face_uid);
    }

    return entries;
  }

  /** How many face uids and distinct identity references the ledger holds. */
  counts(): { faces: number; identities: number } {
    return this.#db
      .prepare(
        'SELECT count(*) AS faces, count(DISTINCT identity_ref) AS identities FROM erasure_ledger',
      )
      .get() as { faces: number; identities: number };
  }

  #lookup(size: number): Database.Statement {
    const marks = new Array<string>(size).fill('?').join(',');
    return this.#db
      .prepare(`SELECT face_uid FROM erasure_ledger WHERE face_uid IN (${marks})`)
      .pluck();
  }
}
