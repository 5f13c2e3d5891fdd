-- mq-outbox schema 1 (PostgreSQL 13 or later: xid8).
CREATE TABLE mq_outbox (
    id BIGSERIAL PRIMARY KEY,
    -- The enqueuing transaction; the relay compares it with the snapshot's xmin.
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    shard INTEGER NOT NULL,
    topic TEXT NOT NULL,
    msg_key TEXT,
    payload BYTEA NOT NULL,
    headers TEXT,
    message_id TEXT NOT NULL,
    idempotency_key TEXT,
    deliver_at_ms BIGINT,
    traceparent TEXT,
    tracestate TEXT,
    enqueued_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT,
    error TEXT
);
-- Pending rows only: the relay's scan stays as small as the backlog,
-- however many sent rows are kept.
CREATE INDEX mq_outbox_pending ON mq_outbox (id) WHERE sent_at_ms IS NULL;
CREATE INDEX mq_outbox_sent ON mq_outbox (sent_at_ms) WHERE sent_at_ms IS NOT NULL AND error IS NULL;
-- A queue table churns: vacuum it early so dead rows do not pile up.
ALTER TABLE mq_outbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01);

-- One NOTIFY per inserting statement, delivered at commit (and only then).
CREATE FUNCTION mq_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mq_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER mq_outbox_notify AFTER INSERT ON mq_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION mq_outbox_notify();

CREATE TABLE mq_inbox (
    scope TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    state INTEGER NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, dedup_key)
);
CREATE INDEX mq_inbox_until ON mq_inbox (until_ms);
