-- Bill-run claims: a worker that takes a due contract holds it until this instant (microseconds),
-- so other workers skip it; a crashed worker's claim simply runs out.
ALTER TABLE contracts ADD COLUMN claimed_until BIGINT;
