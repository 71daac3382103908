-- reidb gallery schema, version 1.
-- Applied by src/gallery/migrations.ts inside one transaction; never edit this file once a
-- gallery has applied it (its sha256 is recorded in schema_migrations): add 002_... instead.

-- One row per enrolled person. external_id is the label the user gives (see
-- src/gallery/identity.ts for what is allowed); metadata is a JSON object.
CREATE TABLE identities (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  external_id TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL,
  metadata TEXT NOT NULL DEFAULT '{}'
    CHECK (json_valid(metadata) AND json_type(metadata) = 'object')
) STRICT;

-- One row per enrolled face. id is also the label of the face in the HNSW index, and
-- AUTOINCREMENT keeps ids from ever being reused, so an index label always means one face.
-- Box in pixels of the source image; yaw/pitch/roll in degrees; scores in [0, 1].
-- appearance, geometry and fused are little-endian float32 arrays.
CREATE TABLE faces (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
  source TEXT NOT NULL,
  camera TEXT,
  captured_at TEXT,
  enrolled_at TEXT NOT NULL,
  box_x REAL NOT NULL,
  box_y REAL NOT NULL,
  box_w REAL NOT NULL,
  box_h REAL NOT NULL,
  yaw REAL NOT NULL,
  pitch REAL NOT NULL,
  roll REAL NOT NULL,
  quality REAL NOT NULL,
  detector_score REAL NOT NULL,
  mesh_score REAL NOT NULL,
  appearance BLOB NOT NULL,
  geometry BLOB NOT NULL,
  fused BLOB NOT NULL
) STRICT;

CREATE INDEX faces_by_identity ON faces(identity_id);

-- What the gallery was built with (embedder_id, appearance_dim, fusion_id, fused_dim,
-- align_mode). Set by the first enrolment; later ones must agree.
CREATE TABLE gallery_config (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;

-- What index.hnsw should contain. The triggers below keep it in step with faces inside the
-- same transaction, so a missing or stale index file is detectable at open.
CREATE TABLE index_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  generation INTEGER NOT NULL,
  face_count INTEGER NOT NULL,
  max_face_id INTEGER NOT NULL
) STRICT;

INSERT INTO index_state (id, generation, face_count, max_face_id) VALUES (1, 0, 0, 0);

CREATE TRIGGER faces_after_insert AFTER INSERT ON faces
BEGIN
  UPDATE index_state
     SET generation = generation + 1,
         face_count = face_count + 1,
         max_face_id = max(max_face_id, NEW.id)
   WHERE id = 1;
END;

CREATE TRIGGER faces_after_delete AFTER DELETE ON faces
BEGIN
  UPDATE index_state
     SET generation = generation + 1,
         face_count = face_count - 1,
         max_face_id = (SELECT coalesce(max(id), 0) FROM faces)
   WHERE id = 1;
END;
