-- reidb gallery schema, version 3: which deployment.sqlite this gallery belongs to.
-- Never edit once applied; add 004_... instead.

-- The erasure ledger lives in deployment.sqlite. A gallery.sqlite that finds its deployment
-- missing or replaced refuses to open, rather than start a fresh ledger that knows nothing of
-- the erasures made so far (an old gallery copy would then bring erased people back).
CREATE TABLE deployment_link (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  deployment_id TEXT NOT NULL,
  linked_at TEXT NOT NULL
) STRICT;
