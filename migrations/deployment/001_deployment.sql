-- reidb deployment schema, version 1 (deployment.sqlite, beside gallery.sqlite).
-- Applied by src/policy/deployment.ts through applyMigrations inside one IMMEDIATE
-- transaction; never edit this file once a deployment has applied it (its sha256 is recorded
-- in schema_migrations): add 002_... instead. This file never travels in an export and must
-- not be restored together with a gallery backup: it is what makes erasure stick.

-- Exactly one row, written by code at the first open (never from SQL random): the deployment's
-- id (a random UUID, bound into every export's AAD) and the 32-byte secret under which
-- identity labels become pseudonymous references (HMAC-SHA256).
CREATE TABLE deployment_info (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  deployment_id TEXT NOT NULL CHECK (length(deployment_id) = 36),
  pseudonym_secret BLOB NOT NULL CHECK (length(pseudonym_secret) = 32),
  created_at TEXT NOT NULL
) STRICT;

-- API keys. Only the SHA-256 of the 32-byte secret is kept; roles is a JSON array of role
-- names. revoked_at, once set, never changes back (trigger below).
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY
    CHECK (length(id) = 14 AND id GLOB 'k_*' AND substr(id, 3) NOT GLOB '*[^0-9a-f]*'),
  secret_sha256 BLOB NOT NULL CHECK (length(secret_sha256) = 32),
  roles TEXT NOT NULL CHECK (json_valid(roles) AND json_type(roles) = 'array'),
  label TEXT,
  created_at TEXT NOT NULL,
  revoked_at TEXT,
  last_used_at TEXT
) STRICT;

CREATE TRIGGER api_keys_revocation_is_final
BEFORE UPDATE OF revoked_at ON api_keys
WHEN OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NOT OLD.revoked_at
BEGIN
  SELECT RAISE(ABORT, 'api_keys: a revoked key cannot be reinstated');
END;

-- The audit trail: append-only and hash-chained (see src/policy/audit.ts). details is the
-- canonical JSON of an object of counts, outcomes and parameters: never a vector, an image or
-- an identity label. identity_ref is the pseudonymous reference, not the label.
CREATE TABLE audit_log (
  seq INTEGER PRIMARY KEY CHECK (seq >= 1),
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  identity_ref TEXT,
  details TEXT NOT NULL CHECK (json_valid(details) AND json_type(details) = 'object'),
  prev_hash TEXT NOT NULL CHECK (length(prev_hash) = 64),
  hash TEXT NOT NULL CHECK (length(hash) = 64)
) STRICT;

CREATE INDEX audit_log_by_identity ON audit_log(identity_ref, seq);

CREATE TRIGGER audit_log_no_update
BEFORE UPDATE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be changed');
END;

CREATE TRIGGER audit_log_no_delete
BEFORE DELETE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be deleted');
END;

-- INSERT OR REPLACE deletes the old row without firing the DELETE trigger (unless
-- recursive_triggers is on), so inserts must also be plain appends: seq = last + 1.
CREATE TRIGGER audit_log_append_only
BEFORE INSERT ON audit_log
WHEN NEW.seq IS NOT coalesce((SELECT max(seq) FROM audit_log), 0) + 1
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only: seq must be the last seq + 1');
END;

-- One row per erased face uid. At every open the gallery deletes any face whose uid is here,
-- so a restored backup or a re-imported export never brings an erased face back. Rows are
-- never changed or removed (triggers below).
CREATE TABLE erasure_ledger (
  face_uid TEXT PRIMARY KEY,
  identity_ref TEXT NOT NULL,
  erased_at TEXT NOT NULL,
  reason TEXT NOT NULL CHECK (reason IN ('erase', 'retention')),
  actor TEXT NOT NULL
) STRICT;

CREATE INDEX erasure_ledger_by_identity ON erasure_ledger(identity_ref, erased_at);

CREATE TRIGGER erasure_ledger_no_update
BEFORE UPDATE ON erasure_ledger
BEGIN
  SELECT RAISE(ABORT, 'erasure_ledger rows cannot be changed');
END;

CREATE TRIGGER erasure_ledger_no_delete
BEFORE DELETE ON erasure_ledger
BEGIN
  SELECT RAISE(ABORT, 'erasure_ledger rows cannot be deleted');
END;

-- One AES-256 key per identity (by pseudonymous reference) for its records in exports.
-- Deleting the row (with secure_delete on, then a WAL checkpoint) crypto-shreds every export
-- made before.
CREATE TABLE export_keys (
  key_id TEXT PRIMARY KEY,
  identity_ref TEXT NOT NULL UNIQUE,
  key BLOB NOT NULL CHECK (length(key) = 32),
  created_at TEXT NOT NULL
) STRICT;
