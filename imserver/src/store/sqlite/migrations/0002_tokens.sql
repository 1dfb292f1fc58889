-- Login tokens. Only a hash of each token is stored: a copy of the database does not let
-- anyone log in. The token is 256 random bits, so a fast hash (BLAKE2b-256) is enough; a
-- password hash's slowness protects guessable secrets, which these are not.
CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    expires_at INTEGER NOT NULL  -- Unix seconds
) WITHOUT ROWID;

CREATE INDEX tokens_expiry ON tokens (expires_at);
