-- New events take the tenant's next sequence number (MAX + 1); this index keeps that lookup
-- logarithmic instead of a scan of every event of the tenant.
CREATE INDEX events_order ON events (tenant_id, seq);
