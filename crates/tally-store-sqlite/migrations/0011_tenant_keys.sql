-- Every table refers to its tenant by the tenant's integer key instead of its 40-character id:
-- the tenant leads every key and index, so each row and index entry carried the id, and a bill
-- run writes some fourteen of them per renewal. `tenants.id` stays the tenant's public id; the
-- other tables' `tenant_id` columns now hold `tenants.key`. Rows of no tenant (none are
-- written: every write is a tenant's) are not carried over.
CREATE TABLE tenants_keyed (
    key          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    test_mode    INTEGER NOT NULL,
    settings     TEXT NOT NULL,
    clock        INTEGER,
    created_at   INTEGER NOT NULL,
    catalog      TEXT NOT NULL DEFAULT '{"features":[],"plans":[],"discounts":[]}',
    invoice_seq  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tenants_keyed (id, name, test_mode, settings, clock, created_at, catalog, invoice_seq)
    SELECT id, name, test_mode, settings, clock, created_at, catalog, invoice_seq
    FROM tenants ORDER BY rowid;

CREATE TABLE api_keys_keyed (
    key_hash   TEXT PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants_keyed (key)
);
INSERT INTO api_keys_keyed (key_hash, tenant_id)
    SELECT a.key_hash, t.key FROM api_keys a JOIN tenants_keyed t ON t.id = a.tenant_id;

CREATE TABLE customers_keyed (
    tenant_id  INTEGER NOT NULL,
    id         TEXT NOT NULL,
    slug       TEXT,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO customers_keyed (tenant_id, id, slug, body)
    SELECT t.key, c.id, c.slug, c.body FROM customers c JOIN tenants_keyed t ON t.id = c.tenant_id;

CREATE TABLE balances_keyed (
    tenant_id    INTEGER NOT NULL,
    customer_id  TEXT NOT NULL,
    currency     TEXT NOT NULL,
    amount       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id, currency)
);
INSERT INTO balances_keyed (tenant_id, customer_id, currency, amount)
    SELECT t.key, b.customer_id, b.currency, b.amount
    FROM balances b JOIN tenants_keyed t ON t.id = b.tenant_id;

CREATE TABLE contracts_keyed (
    tenant_id    INTEGER NOT NULL,
    id           TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    status       TEXT NOT NULL,
    next_due     INTEGER,
    version      INTEGER NOT NULL,
    created_seq  INTEGER NOT NULL,
    body         TEXT NOT NULL,
    terms_id     INTEGER,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO contracts_keyed (tenant_id, id, customer_id, status, next_due, version, created_seq, body, terms_id)
    SELECT t.key, c.id, c.customer_id, c.status, c.next_due, c.version, c.created_seq, c.body, c.terms_id
    FROM contracts c JOIN tenants_keyed t ON t.id = c.tenant_id ORDER BY c.rowid;

CREATE TABLE invoices_keyed (
    tenant_id    INTEGER NOT NULL,
    id           TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    number       TEXT NOT NULL,
    contract_id  TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    issued_at    INTEGER NOT NULL,
    status       TEXT NOT NULL,
    step_key     TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, seq),
    UNIQUE (tenant_id, step_key)
);
INSERT INTO invoices_keyed (tenant_id, id, seq, number, contract_id, customer_id, issued_at, status, step_key, body)
    SELECT t.key, i.id, i.seq, i.number, i.contract_id, i.customer_id, i.issued_at, i.status, i.step_key, i.body
    FROM invoices i JOIN tenants_keyed t ON t.id = i.tenant_id ORDER BY i.rowid;

CREATE TABLE usage_records_keyed (
    tenant_id     INTEGER NOT NULL,
    contract_id   TEXT NOT NULL,
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_slug  TEXT NOT NULL,
    units         TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    is_absolute   INTEGER NOT NULL
);
INSERT INTO usage_records_keyed (tenant_id, contract_id, seq, feature_slug, units, ts, is_absolute)
    SELECT t.key, u.contract_id, u.seq, u.feature_slug, u.units, u.ts, u.is_absolute
    FROM usage_records u JOIN tenants_keyed t ON t.id = u.tenant_id;

CREATE TABLE events_keyed (
    seq          INTEGER PRIMARY KEY,
    tenant_id    INTEGER NOT NULL,
    id           TEXT NOT NULL,
    contract_id  TEXT,
    body         TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
INSERT INTO events_keyed (seq, tenant_id, id, contract_id, body)
    SELECT e.seq, t.key, e.id, e.contract_id, e.body
    FROM events e JOIN tenants_keyed t ON t.id = e.tenant_id;

CREATE TABLE idempotency_keyed (
    tenant_id  INTEGER NOT NULL,
    key        TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
INSERT INTO idempotency_keyed (tenant_id, key, body)
    SELECT t.key, i.key, i.body FROM idempotency i JOIN tenants_keyed t ON t.id = i.tenant_id;

CREATE TABLE claims_keyed (
    tenant_id      INTEGER NOT NULL,
    contract_id    TEXT NOT NULL,
    due            INTEGER NOT NULL,
    claimed_until  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, contract_id)
) WITHOUT ROWID;
INSERT INTO claims_keyed (tenant_id, contract_id, due, claimed_until)
    SELECT t.key, k.contract_id, k.due, k.claimed_until
    FROM claims k JOIN tenants_keyed t ON t.id = k.tenant_id;

CREATE TABLE webhook_endpoints_keyed (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  INTEGER NOT NULL,
    id         TEXT NOT NULL,
    body       TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
INSERT INTO webhook_endpoints_keyed (seq, tenant_id, id, body)
    SELECT w.seq, t.key, w.id, w.body
    FROM webhook_endpoints w JOIN tenants_keyed t ON t.id = w.tenant_id;

CREATE TABLE webhook_deliveries_keyed (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        INTEGER NOT NULL,
    id               TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    status           TEXT NOT NULL,
    next_attempt_at  INTEGER,
    claimed_until    INTEGER,
    body             TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
INSERT INTO webhook_deliveries_keyed (seq, tenant_id, id, endpoint_id, event_id, status, next_attempt_at, claimed_until, body)
    SELECT d.seq, t.key, d.id, d.endpoint_id, d.event_id, d.status, d.next_attempt_at, d.claimed_until, d.body
    FROM webhook_deliveries d JOIN tenants_keyed t ON t.id = d.tenant_id;

CREATE TABLE orders_keyed (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    INTEGER NOT NULL,
    id           TEXT NOT NULL,
    contract_id  TEXT NOT NULL,
    status       TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
INSERT INTO orders_keyed (seq, tenant_id, id, contract_id, status, body)
    SELECT o.seq, t.key, o.id, o.contract_id, o.status, o.body
    FROM orders o JOIN tenants_keyed t ON t.id = o.tenant_id;

-- The tenants' table goes last: the keys table referred to it.
DROP TABLE api_keys;
DROP TABLE customers;
DROP TABLE balances;
DROP TABLE contracts;
DROP TABLE invoices;
DROP TABLE usage_records;
DROP TABLE events;
DROP TABLE idempotency;
DROP TABLE claims;
DROP TABLE webhook_endpoints;
DROP TABLE webhook_deliveries;
DROP TABLE orders;
DROP TABLE tenants;

ALTER TABLE tenants_keyed RENAME TO tenants;
ALTER TABLE api_keys_keyed RENAME TO api_keys;
ALTER TABLE customers_keyed RENAME TO customers;
ALTER TABLE balances_keyed RENAME TO balances;
ALTER TABLE contracts_keyed RENAME TO contracts;
ALTER TABLE invoices_keyed RENAME TO invoices;
ALTER TABLE usage_records_keyed RENAME TO usage_records;
ALTER TABLE events_keyed RENAME TO events;
ALTER TABLE idempotency_keyed RENAME TO idempotency;
ALTER TABLE claims_keyed RENAME TO claims;
ALTER TABLE webhook_endpoints_keyed RENAME TO webhook_endpoints;
ALTER TABLE webhook_deliveries_keyed RENAME TO webhook_deliveries;
ALTER TABLE orders_keyed RENAME TO orders;

CREATE UNIQUE INDEX customers_slug ON customers (tenant_id, slug) WHERE slug IS NOT NULL;
CREATE INDEX contracts_due ON contracts (tenant_id, next_due, id) WHERE next_due IS NOT NULL;
CREATE INDEX contracts_customer ON contracts (tenant_id, customer_id, created_seq);
CREATE INDEX contracts_order ON contracts (tenant_id, created_seq);
CREATE INDEX invoices_contract ON invoices (tenant_id, contract_id, seq);
CREATE INDEX usage_contract ON usage_records (tenant_id, contract_id, ts);
CREATE INDEX events_contract ON events (tenant_id, contract_id, seq);
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint ON webhook_deliveries (tenant_id, endpoint_id, seq);
CREATE INDEX orders_contract ON orders (tenant_id, contract_id, seq);
