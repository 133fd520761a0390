-- Dialect orders (billwerk orders, Salesbricks upgrade orders): made open, then committed or
-- deleted. The write that carries an order out marks it in the same transaction, only while it is
-- still open, so an order is never applied twice.
CREATE TABLE orders (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    id           TEXT NOT NULL,
    contract_id  TEXT NOT NULL,
    status       TEXT NOT NULL,
    body         TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE INDEX orders_contract ON orders (tenant_id, contract_id, seq);
