-- Webhook endpoints and their deliveries. A change's deliveries are written in the same
-- transaction as its events (the outbox); the delivery worker claims due ones with a lease.
CREATE TABLE webhook_endpoints (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    id         TEXT NOT NULL,
    body       TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);

CREATE TABLE webhook_deliveries (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    id               TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    status           TEXT NOT NULL,
    next_attempt_at  BIGINT,
    claimed_until    BIGINT,
    body             TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, seq);
