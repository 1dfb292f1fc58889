-- Retention (issue 13; see `retention.rs`): every batch up to `batch` was committed by `at`
-- (Unix milliseconds). Written by the sweep, so that no row of the hot path carries a time.
CREATE TABLE retention_marks (
    at    INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL
);
