/**
 * The contracts of the deployment side of reidb: API keys and roles, the audit trail, the
 * erasure ledger and the per-identity export keys. They live in `deployment.sqlite` beside
 * the gallery's own `gallery.sqlite`, and never travel in an export or a gallery backup, so
 * that restoring old gallery data cannot undo an erasure. See docs/COMPLIANCE.md.
 */

/**
 * What a key may do. `admin` manages keys and policies: it reads no faces itself, but can make
 * a key of any role and set the gallery's keep-for, so it is the most powerful role.
 */
export type Role = 'enrol' | 'search' | 'read' | 'compliance' | 'admin';

export const ROLES: readonly Role[] = ['enrol', 'search', 'read', 'compliance', 'admin'];

/** An API key as listed: never its secret or hash. Times are ISO-8601 UTC. */
export interface KeyRecord {
  /** Public part of the key, `k_` + 12 hex digits; also the audit actor `key:<id>`. */
  id: string;
  roles: Role[];
  label: string | null;
  createdAt: string;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

/** A newly created key: `key` is shown once and stored only as a hash. */
export interface CreatedKey extends KeyRecord {
  /** The bearer token, `reidb_<id>_<secret>`; clients send `Authorization: Bearer <key>`. */
  key: string;
}

/** What the audit trail records. No biometric data and no identity label ever goes in. */
export type AuditAction =
  | 'enrol'
  | 'search'
  | 'read'
  | 'list'
  | 'export_identity'
  | 'erase'
  | 'retention_erase'
  | 'erasure_reapplied'
  | 'policy_change'
  | 'key_create'
  | 'key_revoke'
  | 'gallery_export'
  | 'gallery_import'
  | 'audit_export';

/** One row of the append-only audit trail. */
export interface AuditRow {
  /** 1, 2, 3, ... with no gaps. */
  seq: number;
  /** ISO-8601 UTC. */
  at: string;
  /** `key:<id>`, `cli:<user>`, `system:retention`, `system:open`, or `anonymous` (open mode). */
  actor: string;
  action: AuditAction;
  /** Pseudonymous identity reference (identityRef), or null. */
  identityRef: string | null;
  /** Counts, outcomes and parameters; never vectors, images or identity labels. */
  details: Record<string, unknown>;
  /** Hex sha256 of the previous row (64 zeros for seq 1). */
  prevHash: string;
  /** Hex sha256 over prevHash and this row's canonical JSON (see audit.ts). */
  hash: string;
}

/** What `reidb audit verify` reports. */
export interface AuditVerification {
  ok: boolean;
  rows: number;
  /** Hash of the last row, to be kept elsewhere as an anchor; null when empty. */
  head: string | null;
  /** The first row that does not verify, when !ok. */
  firstBad?: { seq: number; reason: string };
}

/** One erasure as the ledger keeps it. */
export interface LedgerEntry {
  identityRef: string;
  /** Random face uids (faces.uid), not biometric and not linkable without the gallery. */
  faceUids: string[];
  erasedAt: string;
  /** 'erase' (on request) or 'retention'. */
  reason: 'erase' | 'retention';
  actor: string;
}

/** Every AuditAction, in the order of the type; for checking input at run time. */
export const AUDIT_ACTIONS: readonly AuditAction[] = [
  'enrol',
  'search',
  'read',
  'list',
  'export_identity',
  'erase',
  'retention_erase',
  'erasure_reapplied',
  'policy_change',
  'key_create',
  'key_revoke',
  'gallery_export',
  'gallery_import',
  'audit_export',
];

/** Why faces were erased: on request ('erase') or because they expired ('retention'). */
export type ErasureReason = 'erase' | 'retention';

/** What `AuditTrail.rows` returns: all rows, or one identity's, from a seq, at most `limit`. */
export interface AuditFilter {
  /** Only rows about this pseudonymous reference. */
  identityRef?: string;
  /** Only rows with seq >= fromSeq (1-based). */
  fromSeq?: number;
  /** At most this many rows (a positive integer). */
  limit?: number;
}

/**
 * One identity's record as sealed for an export: AES-256-GCM under that identity's export
 * key, with the key id and the deployment id as associated data. All fields but keyId are
 * standard base64.
 */
export interface SealedRecord {
  keyId: string;
  /** 12 random bytes. */
  iv: string;
  /** The 16-byte GCM authentication tag. */
  tag: string;
  data: string;
}
