import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

import type Database from 'better-sqlite3';

import { ReidbError } from '../errors.ts';
import { ROLES, type CreatedKey, type KeyRecord, type Role } from './types.ts';

/** Bytes of a key's secret (256 bits: a fast hash is enough, no password stretching). */
const SECRET_BYTES = 32;

/** A bearer key: `reidb_` + id (`k_` + 12 hex) + `_` + 43 base64url characters (32 bytes). */
const KEY_PATTERN = /^reidb_(k_[0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

/** Longest label, in characters (code points). */
const MAX_LABEL = 200;

/** Control characters, line or paragraph separators and lone surrogates, refused in labels. */
const UNSAFE = /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}]/u;

/** last_used_at is written at most this often per key, in ms. */
const LAST_USED_RESOLUTION_MS = 60_000;

/** Compared against when the id is unknown, so that the work done does not depend on it. */
const DUMMY_DIGEST = createHash('sha256').update('reidb: no such key').digest();

interface KeyRow {
  id: string;
  secret_sha256: Buffer;
  roles: string;
  label: string | null;
  created_at: string;
  revoked_at: string | null;
  last_used_at: string | null;
}

const COLUMNS = 'id, secret_sha256, roles, label, created_at, revoked_at, last_used_at';

/**
 * Parses a comma-separated role list such as 'enrol,search' (spaces around words allowed).
 * Throws invalid_argument naming the bad word, listing the valid roles, when a word is empty,
 * unknown or repeated, or when there is no role at all.
 */
export function parseRoles(text: string): Role[] {
  const valid = ROLES.join(', ');
  if (typeof text !== 'string' || text.trim() === '') {
    throw new ReidbError('invalid_argument', `give at least one role; valid roles: ${valid}`, {
      input: 'roles',
    });
  }

  const roles: Role[] = [];
  for (const raw of text.split(',')) {
    const word = raw.trim();
    if (!(ROLES as readonly string[]).includes(word)) {
      const what = word === '' ? 'an empty role' : `unknown role '${word}'`;
      throw new ReidbError('invalid_argument', `${what} in '${text}'; valid roles: ${valid}`, {
        input: word,
      });
    }
    if (roles.includes(word as Role)) {
      throw new ReidbError('invalid_argument', `role '${word}' is given twice in '${text}'`, {
        input: word,
      });
    }
    roles.push(word as Role);
  }

  return roles;
}

/** sha256 of a key's 32 secret bytes: what the api_keys table keeps. */
function digest(secret: Buffer): Buffer {
  return createHash('sha256').update(secret).digest();
}

function toRecord(row: KeyRow): KeyRecord {
  return {
    id: row.id,
    roles: JSON.parse(row.roles) as Role[],
    label: row.label,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
  };
}

function checkRoles(roles: readonly Role[]): void {
  if (!Array.isArray(roles) || roles.length === 0) {
    throw new ReidbError(
      'invalid_argument',
      `a key needs at least one role; valid roles: ${ROLES.join(', ')}`,
      { input: 'roles' },
    );
  }

  const seen = new Set<string>();
  for (const role of roles) {
    if (!(ROLES as readonly unknown[]).includes(role)) {
      throw new ReidbError(
        'invalid_argument',
        `unknown role '${String(role)}'; valid roles: ${ROLES.join(', ')}`,
        { input: String(role) },
      );
    }
    if (seen.has(role)) {
      throw new ReidbError('invalid_argument', `role '${role}' is given twice`, { input: role });
    }
    seen.add(role);
  }
}

/** The label to store: null when absent or empty; invalid_argument when too long or unsafe. */
function checkLabel(label: string | undefined | null): string | null {
  if (label === undefined || label === null || label === '') return null;

  if (typeof label !== 'string') {
    throw new ReidbError('invalid_argument', 'label must be a string', { input: 'label' });
  }
  if ([...label].length > MAX_LABEL) {
    throw new ReidbError(
      'invalid_argument',
      `label is ${[...label].length} characters long; at most ${MAX_LABEL} are allowed`,
      { input: 'label' },
    );
  }
  if (UNSAFE.test(label)) {
    throw new ReidbError(
      'invalid_argument',
      'label holds a control character, a line break or a broken surrogate pair',
      { input: 'label' },
    );
  }

  return label;
}

/**
 * The API keys of a deployment. A key is `reidb_<id>_<secret>`: the id (`k_` + 12 hex digits)
 * is public and names the key in listings and in the audit trail; the secret (32 random bytes,
 * base64url) is returned once by `create` and stored only as its SHA-256.
 */
export class ApiKeys {
  readonly #db: Database.Database;
  readonly #now: () => Date;

  /** Use Deployment.keys. */
  constructor(db: Database.Database, now: () => Date) {
    this.#db = db;
    this.#now = now;
  }

  /**
   * Creates a key with the given roles (at least one, each in ROLES, none twice) and an
   * optional label (at most 200 characters, no control characters; '' means none). Returns
   * the record with the bearer `key`, which is not stored and cannot be shown again. Throws
   * invalid_argument naming the bad role or the label.
   */
  create(options: { roles: Role[]; label?: string }): CreatedKey {
    checkRoles(options.roles);
    const label = checkLabel(options.label);

    const secret = randomBytes(SECRET_BYTES);
    const createdAt = this.#now().toISOString();
    const insert = this.#db.prepare(
      `INSERT INTO api_keys (id, secret_sha256, roles, label, created_at)
       VALUES (?, ?, ?, ?, ?)`,
    );
    const exists = this.#db.prepare('SELECT 1 FROM api_keys WHERE id = ?').pluck();

    // 48 random bits make a collision unlikely, but never impossible: draw again if one occurs.
    const id = this.#db
      .transaction(() => {
        for (;;) {
          const candidate = 'k_' + randomBytes(6).toString('hex');
          if (exists.get(candidate) !== undefined) continue;
          insert.run(candidate, digest(secret), JSON.stringify(options.roles), label, createdAt);
          return candidate;
        }
      })
      .immediate();

    return {
      id,
      roles: [...options.roles],
      label,
      createdAt,
      revokedAt: null,
      lastUsedAt: null,
      key: `reidb_${id}_${secret.toString('base64url')}`,
    };
  }

  /** Every key, revoked ones included, in creation order; never a secret or hash. */
  list(): KeyRecord[] {
    const rows = this.#db
      .prepare(`SELECT ${COLUMNS} FROM api_keys ORDER BY rowid`)
      .all() as KeyRow[];
    return rows.map(toRecord);
  }

  /** One key's record by id, or null when there is none. */
  get(id: string): KeyRecord | null {
    const row = this.#db.prepare(`SELECT ${COLUMNS} FROM api_keys WHERE id = ?`).get(id) as
      KeyRow | undefined;
    return row === undefined ? null : toRecord(row);
  }

  /**
   * Revokes a key: from the next request on it authenticates nothing. Revoking a revoked key
   * changes nothing and keeps its first revokedAt. Returns the record; throws key_not_found
   * naming the id when there is no such key.
   */
  revoke(id: string): KeyRecord {
    const select = this.#db.prepare(`SELECT ${COLUMNS} FROM api_keys WHERE id = ?`);
    const update = this.#db.prepare(
      'UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL',
    );

    const row = this.#db
      .transaction(() => {
        if (select.get(id) === undefined) return undefined;
        update.run(this.#now().toISOString(), id);
        return select.get(id) as KeyRow;
      })
      .immediate();

    if (row === undefined) {
      throw new ReidbError('key_not_found', `there is no API key '${String(id)}'`, {
        input: String(id),
      });
    }
    return toRecord(row);
  }

  /**
   * The key a bearer token belongs to, or null when the token is malformed, its id unknown,
   * its secret wrong or the key revoked. The SHA-256 digests are compared in constant time,
   * and a digest is computed and compared even for an unknown id, so that timing does not
   * tell which ids exist. Records the use in last_used_at, at most once a minute per key.
   */
  authenticate(bearer: string): KeyRecord | null {
    const match = typeof bearer === 'string' ? KEY_PATTERN.exec(bearer) : null;
    const secretText = match?.[2] ?? '';
    const secret = Buffer.from(secretText, 'base64url');
    // Of the 43rd character only 4 bits are used; refuse the other spellings of one secret.
    const canonical = secret.length === SECRET_BYTES && secret.toString('base64url') === secretText;

    const row =
      match === null
        ? undefined
        : (this.#db.prepare(`SELECT ${COLUMNS} FROM api_keys WHERE id = ?`).get(match[1]) as
            KeyRow | undefined);
    const stored = row?.secret_sha256.length === 32 ? row.secret_sha256 : DUMMY_DIGEST;
    const equal = timingSafeEqual(digest(secret), stored);

    if (row === undefined || !canonical || !equal || row.revoked_at !== null) return null;

    const record = toRecord(row);
    const nowDate = this.#now();
    const last = row.last_used_at === null ? NaN : Date.parse(row.last_used_at);
    if (!(nowDate.getTime() - last < LAST_USED_RESOLUTION_MS)) {
      const at = nowDate.toISOString();
      const cutoff = new Date(nowDate.getTime() - LAST_USED_RESOLUTION_MS).toISOString();
      // The condition repeats the check, so two processes racing write it once.
      this.#db
        .prepare(
          `UPDATE api_keys SET last_used_at = ?
            WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)`,
        )
        .run(at, row.id, cutoff);
      record.lastUsedAt = at;
    }

    return record;
  }

  /** Whether any key is not revoked: then every route but /healthz needs a key. */
  hasActive(): boolean {
    const row = this.#db
      .prepare('SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)')
      .pluck()
      .get();
    return row === 1;
  }
}
