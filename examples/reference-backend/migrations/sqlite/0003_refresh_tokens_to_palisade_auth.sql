-- Refresh tokens moved to palisade-auth's store (`palisade_refresh_tokens`
-- and `palisade_refresh_families`, created by `SqliteRefreshStore::migrate`),
-- whose family revocation is persistent and checked inside each rotation.
-- Sessions of the old table end: their users sign in again.
DROP TABLE refresh_tokens;
