-- The chunk and conversation rows of the latest transactions, the chunks in the order they
-- were written, until the writer folds them into stream_chunks and conversation_chunks (see
-- `fold.rs`). A transaction's rows then land on a few pages here instead of one page per
-- stream it touched, and each stream's page in the main tables is written once per fold.
-- For any one stream, every row here comes after every row there.
CREATE TABLE recent_stream_chunks (
    owner     INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    batch     INTEGER NOT NULL,
    entries   BLOB NOT NULL
);
CREATE UNIQUE INDEX recent_stream_chunks_position ON recent_stream_chunks (owner, last_seq);

-- Its rows are a few bytes: keyed like conversation_chunks, so that the conversation
-- queries read them without a second lookup.
CREATE TABLE recent_conversation_chunks (
    owner     INTEGER NOT NULL,
    peer      INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    received  INTEGER NOT NULL,
    PRIMARY KEY (owner, peer, first_seq)
) WITHOUT ROWID;
