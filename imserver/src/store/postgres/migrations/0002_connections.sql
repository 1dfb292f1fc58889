-- Relay connections counted on every node (issue 14), for --max-connections-per-user: each
-- node has a row it refreshes every few seconds; a node that stopped refreshing (killed) is
-- deleted, and its connections with it.
CREATE TABLE nodes (
    id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seen BIGINT NOT NULL  -- Unix milliseconds, by PostgreSQL's clock
);

CREATE TABLE connections (
    node    BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    conn    BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    PRIMARY KEY (node, conn)
);
CREATE INDEX connections_user ON connections (user_id);
