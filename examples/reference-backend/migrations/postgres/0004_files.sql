-- The files of every user (PostgreSQL; see ../sqlite/0004_files.sql for the
-- states and the reasoning). Versions 0002 and 0003 exist for SQLite only:
-- they created and then dropped the first refresh-token table, which
-- palisade-auth's store replaced before PostgreSQL was supported.
--
-- Paths compare byte-wise (COLLATE "C"), as in SQLite, so the `path > cursor`
-- pages of GET /files follow the same order on both.
CREATE TABLE files (
    user_id      TEXT NOT NULL,
    path         TEXT COLLATE "C" NOT NULL,
    size         BIGINT NOT NULL CHECK (size >= 0),
    content_type TEXT,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'stored', 'deleting')),
    token        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id, path)
);

CREATE INDEX files_unsettled ON files (user_id, updated_at) WHERE state <> 'stored';

CREATE TABLE file_roots (
    user_id    TEXT PRIMARY KEY NOT NULL,
    indexed_at BIGINT NOT NULL
);
