-- Accounts of the reference backend (PostgreSQL; the SQLite schema is in
-- ../sqlite, same versions). Emails are stored normalised (lower-cased) by
-- the service; the unique index on lower(email) refuses a second account
-- that differs only in case, like SQLite's COLLATE NOCASE; the plain one
-- serves the lookups by email. The password hash is a PHC string
-- (argon2id), never the password.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE UNIQUE INDEX users_email ON users (lower(email));
