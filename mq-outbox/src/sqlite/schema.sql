-- mq-outbox schema 1 (SQLite 3.35 or later).
CREATE TABLE mq_outbox (
    -- AUTOINCREMENT: ids never go back, even after the newest rows are deleted.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    shard INTEGER NOT NULL,
    topic TEXT NOT NULL,
    msg_key TEXT,
    payload BLOB NOT NULL,
    headers TEXT,
    message_id TEXT NOT NULL,
    idempotency_key TEXT,
    deliver_at_ms INTEGER,
    traceparent TEXT,
    tracestate TEXT,
    enqueued_at_ms INTEGER NOT NULL,
    sent_at_ms INTEGER,
    error TEXT
);
CREATE INDEX mq_outbox_pending ON mq_outbox (id) WHERE sent_at_ms IS NULL;
CREATE INDEX mq_outbox_sent ON mq_outbox (sent_at_ms) WHERE sent_at_ms IS NOT NULL AND error IS NULL;

-- The relay lease: one relay at a time publishes from a SQLite file.
CREATE TABLE mq_outbox_lease (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);

CREATE TABLE mq_inbox (
    scope TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    state INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, dedup_key)
);
CREATE INDEX mq_inbox_until ON mq_inbox (until_ms);
