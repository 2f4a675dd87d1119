-- Accounts of the reference backend. Emails are compared case-insensitively;
-- the password hash is a PHC string (argon2id), never the password.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;
