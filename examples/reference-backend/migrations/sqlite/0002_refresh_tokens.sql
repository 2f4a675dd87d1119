-- Refresh tokens: only their SHA-256 is stored. A family is one login's chain
-- of rotated tokens; presenting a spent token revokes the whole family.
CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY NOT NULL,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent_at   INTEGER,
    revoked    INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
