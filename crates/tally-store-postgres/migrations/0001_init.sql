-- Tally's schema. Every table keys on the tenant; instants are integer microseconds since the
-- Unix epoch (UTC), so they sort and compare as numbers.
CREATE TABLE tenants (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    test_mode    BOOLEAN NOT NULL,
    settings     TEXT NOT NULL,
    clock        BIGINT,
    created_at   BIGINT NOT NULL,
    catalog      TEXT NOT NULL DEFAULT '{"features":[],"plans":[],"discounts":[]}',
    invoice_seq  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id)
);

CREATE TABLE customers (
    tenant_id  TEXT NOT NULL,
    id         TEXT NOT NULL,
    slug       TEXT,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX customers_slug ON customers (tenant_id, slug) WHERE slug IS NOT NULL;

CREATE TABLE balances (
    tenant_id    TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    currency     TEXT NOT NULL,
    amount       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, currency)
);

CREATE TABLE contracts (
    tenant_id    TEXT NOT NULL,
    id           TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    status       TEXT NOT NULL,
    next_due     BIGINT,
    version      BIGINT NOT NULL,
    created_seq  BIGINT GENERATED ALWAYS AS IDENTITY,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX contracts_due ON contracts (tenant_id, next_due) WHERE next_due IS NOT NULL;
CREATE INDEX contracts_customer ON contracts (tenant_id, customer_id, created_seq);
CREATE INDEX contracts_order ON contracts (tenant_id, created_seq);

CREATE TABLE invoices (
    tenant_id    TEXT NOT NULL,
    id           TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    number       TEXT NOT NULL,
    contract_id  TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    issued_at    BIGINT NOT NULL,
    status       TEXT NOT NULL,
    step_key     TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, seq),
    UNIQUE (tenant_id, step_key)
);
CREATE INDEX invoices_customer ON invoices (tenant_id, customer_id, seq);
CREATE INDEX invoices_contract ON invoices (tenant_id, contract_id, seq);

CREATE TABLE invoice_lines (
    tenant_id     TEXT NOT NULL,
    invoice_id    TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    feature_slug  TEXT,
    description   TEXT NOT NULL,
    quantity      TEXT NOT NULL,
    unit_amount   TEXT NOT NULL,
    amount        TEXT NOT NULL,
    period_start  BIGINT NOT NULL,
    period_end    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, invoice_id, idx)
);

CREATE TABLE usage_records (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    contract_id   TEXT NOT NULL,
    feature_slug  TEXT NOT NULL,
    units         TEXT NOT NULL,
    ts            BIGINT NOT NULL,
    is_absolute   BOOLEAN NOT NULL
);
CREATE INDEX usage_contract ON usage_records (tenant_id, contract_id, ts);

CREATE TABLE events (
    tenant_id    TEXT NOT NULL,
    id           TEXT NOT NULL,
    seq          BIGINT GENERATED ALWAYS AS IDENTITY,
    contract_id  TEXT,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX events_contract ON events (tenant_id, contract_id, seq);

CREATE TABLE idempotency (
    tenant_id  TEXT NOT NULL,
    key        TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
