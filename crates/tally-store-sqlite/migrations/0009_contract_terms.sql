-- A contract's terms (its customer, configuration, phases, scheduled changes, cancellation) move
-- to a table of their own, rewritten only when they change; the contract's row keeps its
-- progress (the current period, what was billed up to where and paid), which every renewal
-- moves. SQLite rewrites a whole row to change any of it, so a renewal rewrote the terms too.
CREATE TABLE contract_terms (
    id    INTEGER PRIMARY KEY,
    body  TEXT NOT NULL
);
ALTER TABLE contracts ADD COLUMN terms_id INTEGER;
INSERT INTO contract_terms (id, body)
    SELECT rowid, json_remove(body, '$.period', '$.period_idx', '$.arrears_billed_until',
        '$.usage_billed_until', '$.paid', '$.carried')
    FROM contracts;
UPDATE contracts SET terms_id = rowid,
    body = json_remove(body, '$.id', '$.customer_id', '$.status', '$.created_at', '$.activation',
        '$.free_trial_days', '$.alignment', '$.trial_end', '$.schedule', '$.config', '$.phases',
        '$.scheduled', '$.next_seq', '$.cancel_at', '$.cancel_at_period_end', '$.ended_at');
