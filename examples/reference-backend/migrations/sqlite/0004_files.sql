-- The files of every user, kept in step with the disk by the `/files`
-- handlers (src/files.rs): the per-user quota is summed from these rows and
-- `GET /files` lists them without opening a file.
--
-- state:
--   'pending'  an upload holds `size` bytes of quota (its reservation, at most
--              the declared length or the upload cap); its file may or may not
--              be on disk yet. Settled to 'stored' or deleted.
--   'stored'   on disk; `size` and `content_type` (the type sniffed at upload)
--              are the file's.
--   'deleting' being removed from the disk; still counted until the row goes.
-- `token` names the upload or delete that owns the row, so a settlement or a
-- release only ever touches its own row. Times are Unix milliseconds; a row
-- that is not 'stored' and has not moved for a while was left by a process
-- that died, and is reconciled with the disk.
CREATE TABLE files (
    user_id      TEXT NOT NULL,
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    content_type TEXT,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'stored', 'deleting')),
    token        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, path)
) STRICT, WITHOUT ROWID;

CREATE INDEX files_unsettled ON files (user_id, updated_at) WHERE state <> 'stored';

-- Users whose directory was indexed into `files`: files stored before this
-- table existed are imported once, on the user's next `/files` request.
CREATE TABLE file_roots (
    user_id    TEXT PRIMARY KEY NOT NULL,
    indexed_at INTEGER NOT NULL
) STRICT;
