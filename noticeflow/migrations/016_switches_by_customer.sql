-- The sub-processors in use for one customer (noticeflow/annex.py: `customers subprocessors`,
-- the annex, the customer's action page) are read from the switch events alone; this index finds
-- one customer's switches without reading the whole event store (the query names the two event
-- types as literals, so the planner can use this partial index).
CREATE INDEX events_switches_by_customer ON events ((data::jsonb ->> 'customer_id'), tx_id, position)
    WHERE event_type IN ('subprocessor_enabled', 'subprocessor_disabled');
