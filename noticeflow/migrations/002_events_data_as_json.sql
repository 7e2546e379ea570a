-- Event data is stored as `json`, not `jsonb`: PostgreSQL keeps `json` text exactly as written,
-- so the stored text of an event written from now on is the very canonical JSON its hash covers
-- (an auditor can hash the stored bytes), and appends and reads skip jsonb's binary conversion.
-- Events written before this keep jsonb's rendering of their data; verification always
-- re-canonicalises the parsed data, so their chains verify as before.
ALTER TABLE events ALTER COLUMN data TYPE json USING data::json;
