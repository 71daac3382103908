-- reidb gallery schema, version 2: what retention, minimisation and provable erasure need.
-- Never edit once applied; add 003_... instead.

-- A random id per face that means the same face in every copy of the gallery (a backup, an
-- export, an import elsewhere). The erasure ledger in deployment.sqlite lists erased faces by
-- it, so a restored copy can be cleaned. Not biometric and not derived from the face.
ALTER TABLE faces ADD COLUMN uid TEXT;
UPDATE faces SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL;
CREATE UNIQUE INDEX faces_by_uid ON faces(uid);

-- Optional JPEG of the face box, only when the gallery's policy stores thumbnails.
ALTER TABLE faces ADD COLUMN thumbnail BLOB;

-- Per identity, what was recorded at enrolment: keep-for in seconds (NULL: the gallery's
-- policy decides), legal basis and purpose (Art. 30 record; NULL: the gallery's).
ALTER TABLE identities ADD COLUMN keep_for_seconds INTEGER CHECK (keep_for_seconds > 0);
ALTER TABLE identities ADD COLUMN legal_basis TEXT;
ALTER TABLE identities ADD COLUMN purpose TEXT;

-- The gallery's policy: one row. keep_for_seconds NULL keeps faces until erased.
CREATE TABLE gallery_policy (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  keep_for_seconds INTEGER CHECK (keep_for_seconds > 0),
  legal_basis TEXT,
  purpose TEXT,
  thumbnails TEXT NOT NULL DEFAULT 'off' CHECK (thumbnails IN ('off', 'on', 'blurred')),
  updated_at TEXT NOT NULL
) STRICT;

INSERT INTO gallery_policy (id, updated_at) VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- Faces by enrolment time, for the retention job.
CREATE INDEX faces_by_enrolled_at ON faces(enrolled_at);
