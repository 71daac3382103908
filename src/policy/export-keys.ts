import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

import type Database from 'better-sqlite3';

import { ReidbError } from '../errors.ts';
import { checkIdentityRef } from './audit.ts';
import type { SealedRecord } from './types.ts';

export type { SealedRecord } from './types.ts';

/** Bytes of an AES-256 key. */
const KEY_BYTES = 32;

/** Bytes of a GCM nonce (the size GCM is designed for). */
const IV_BYTES = 12;

/** Bytes of a GCM authentication tag. */
const TAG_BYTES = 16;

/** An export key's id: 'ek_' + 16 hex digits. */
const KEY_ID_PATTERN = /^ek_[0-9a-f]{16}$/;

/** Standard base64 with padding, as Buffer.toString('base64') writes it. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function invalid(message: string, input: string): ReidbError {
  return new ReidbError('export_invalid', message, { input });
}

/** Decodes one base64 field of a sealed record strictly; export_invalid naming it otherwise. */
function decodeField(value: unknown, field: string, bytes?: number): Buffer {
  if (typeof value !== 'string' || !BASE64.test(value)) {
    throw invalid(`the sealed record's ${field} is not base64`, field);
  }

  const decoded = Buffer.from(value, 'base64');
  if (bytes !== undefined && decoded.length !== bytes) {
    throw invalid(`the sealed record's ${field} is ${decoded.length} bytes, not ${bytes}`, field);
  }
  return decoded;
}

/**
 * The per-identity export keys (table export_keys of deployment.sqlite). Each identity's
 * record in an export is sealed with AES-256-GCM under its own key, which never leaves this
 * file; destroying the key (at erasure) makes the record unreadable in every export made
 * before, wherever it is kept (crypto-shredding). The associated data binds each record to
 * its key id and to this deployment's id.
 */
export class ExportKeys {
  readonly #db: Database.Database;
  readonly #deploymentId: string;
  readonly #now: () => Date;

  /** Use Deployment.exportKeys. */
  constructor(db: Database.Database, deploymentId: string, now: () => Date) {
    this.#db = db;
    this.#deploymentId = deploymentId;
    this.#now = now;
  }

  /**
   * The export key of an identity reference, created (32 random bytes, id 'ek_' + 16 hex)
   * when it has none, in one IMMEDIATE transaction so that two processes agree on one key.
   */
  keyFor(identityRef: string): { keyId: string; key: Buffer } {
    checkIdentityRef(identityRef);
    const select = this.#db.prepare(
      'SELECT key_id AS keyId, key FROM export_keys WHERE identity_ref = ?',
    );
    const insert = this.#db.prepare(
      'INSERT INTO export_keys (key_id, identity_ref, key, created_at) VALUES (?, ?, ?, ?)',
    );
    const idTaken = this.#db.prepare('SELECT 1 FROM export_keys WHERE key_id = ?').pluck();

    return this.#db
      .transaction(() => {
        const existing = select.get(identityRef) as { keyId: string; key: Buffer } | undefined;
        if (existing !== undefined) return existing;

        let keyId: string;
        do keyId = 'ek_' + randomBytes(8).toString('hex');
        while (idTaken.get(keyId) !== undefined);
        const key = randomBytes(KEY_BYTES);
        insert.run(keyId, identityRef, key, this.#now().toISOString());
        return { keyId, key };
      })
      .immediate();
  }

  /**
   * Destroys the export key of an identity reference; returns whether there was one. With
   * secure_delete on, the key's bytes are zeroed in the database file, but an older page may
   * still sit in the WAL: the caller runs Deployment.checkpointTruncate after.
   */
  destroy(identityRef: string): boolean {
    checkIdentityRef(identityRef);
    const result = this.#db
      .prepare('DELETE FROM export_keys WHERE identity_ref = ?')
      .run(identityRef);
    return result.changes > 0;
  }

  /**
   * Seals `plaintext` for an export under the identity's key (created when absent):
   * AES-256-GCM, a fresh random 12-byte iv, associated data keyId + deployment id.
   */
  seal(identityRef: string, plaintext: Buffer): SealedRecord {
    if (!Buffer.isBuffer(plaintext)) {
      throw new ReidbError('invalid_argument', 'the record to seal must be a Buffer', {
        input: 'plaintext',
      });
    }
    const { keyId, key } = this.keyFor(identityRef);

    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(this.#aad(keyId));
    const data = Buffer.concat([cipher.update(plaintext), cipher.final()]);

    return {
      keyId,
      iv: iv.toString('base64'),
      tag: cipher.getAuthTag().toString('base64'),
      data: data.toString('base64'),
    };
  }

  /**
   * Opens a sealed record. Returns null when this deployment has no key of that id (the
   * identity was erased, or the record comes from another deployment). Throws export_invalid
   * naming the key id when the record is malformed, or when the key exists but the record
   * fails authentication (altered, or sealed by another deployment under a copied key).
   */
  open(sealed: SealedRecord): Buffer | null {
    if (sealed === null || typeof sealed !== 'object') {
      throw invalid('a sealed record must be an object {keyId, iv, tag, data}', 'sealed');
    }
    if (typeof sealed.keyId !== 'string' || !KEY_ID_PATTERN.test(sealed.keyId)) {
      throw invalid(`the sealed record's keyId is not an export key id ('ek_' + 16 hex)`, 'keyId');
    }
    const iv = decodeField(sealed.iv, 'iv', IV_BYTES);
    const tag = decodeField(sealed.tag, 'tag', TAG_BYTES);
    const data = decodeField(sealed.data, 'data');

    const key = this.#db
      .prepare('SELECT key FROM export_keys WHERE key_id = ?')
      .pluck()
      .get(sealed.keyId) as Buffer | undefined;
    if (key === undefined) return null;

    try {
      const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(this.#aad(sealed.keyId));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(data), decipher.final()]);
    } catch (cause) {
      throw new ReidbError(
        'export_invalid',
        `the record sealed under export key ${sealed.keyId} fails authentication: it was ` +
          `altered, or sealed by another deployment`,
        { input: sealed.keyId, cause },
      );
    }
  }

  /** Associated data: the key id then the deployment id (the key id has a fixed length). */
  #aad(keyId: string): Buffer {
    return Buffer.from(keyId + this.#deploymentId, 'utf8');
  }
}
