-- Bill-run claims move to their own narrow table: SQLite rewrites a whole row to change one
-- column, so a claim on the contracts table rewrote every claimed contract's body.
CREATE TABLE claims (
    tenant_id      TEXT NOT NULL,
    contract_id    TEXT NOT NULL,
    due            INTEGER NOT NULL,
    claimed_until  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, contract_id)
) WITHOUT ROWID;
ALTER TABLE contracts DROP COLUMN claimed_until;
-- The claim reads due contracts' ids from the index alone.
DROP INDEX contracts_due;
CREATE INDEX contracts_due ON contracts (tenant_id, next_due, id) WHERE next_due IS NOT NULL;
