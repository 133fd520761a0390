-- Events are keyed by their sequence number, now one sequence for the whole database: the
-- table's own key orders them (a tenant's events keep their order), a new event takes the next
-- key without reading the tenant's last one, and the index that served that read goes.
CREATE TABLE events_by_seq (
    seq          INTEGER PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    id           TEXT NOT NULL,
    contract_id  TEXT,
    body         TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
INSERT INTO events_by_seq (seq, tenant_id, id, contract_id, body)
    SELECT ROW_NUMBER() OVER (ORDER BY tenant_id, seq), tenant_id, id, contract_id, body
    FROM events;
DROP TABLE events;
ALTER TABLE events_by_seq RENAME TO events;
CREATE INDEX events_contract ON events (tenant_id, contract_id, seq);
