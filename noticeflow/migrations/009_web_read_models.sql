-- Read models for the dashboard and the JSON API (noticeflow/web). The projector keeps a notice's
-- counts in rm_notices as it applies each event (a list of 1,000 notices reads 1,000 rows, never
-- the 100,000 customer rows behind one), a change marker (the last applied event's stream
-- version) that the live page polls, and a progress table (per minute, how many customers were
-- delivered, objected, opted in and activated) that the chart is drawn from.
ALTER TABLE rm_notices
    ADD COLUMN delivered      integer NOT NULL DEFAULT 0,
    ADD COLUMN undelivered    integer NOT NULL DEFAULT 0,
    ADD COLUMN opted_in       integer NOT NULL DEFAULT 0,
    ADD COLUMN activated      integer NOT NULL DEFAULT 0,
    ADD COLUMN settled        integer NOT NULL DEFAULT 0,
    ADD COLUMN max_deadline   timestamptz,          -- the latest customer deadline seen so far
    ADD COLUMN version        bigint NOT NULL DEFAULT 0,  -- stream version of the last event applied
    ADD COLUMN last_event_at  timestamptz;

-- When ops excluded the customer (`notice exclude`); its verdict follows at the next activation round.
ALTER TABLE rm_notice_customers ADD COLUMN excluded_at timestamptz;

CREATE TABLE rm_notice_progress (
    notice_id    text NOT NULL,
    at           timestamptz NOT NULL,               -- the minute (UTC) the changes happened in
    delivered    integer NOT NULL DEFAULT 0,         -- net changes in that minute
    objections   integer NOT NULL DEFAULT 0,
    opted_in     integer NOT NULL DEFAULT 0,
    activated    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (notice_id, at)
);

-- The notice list: newest first, and by phase.
CREATE INDEX rm_notices_created ON rm_notices (created_at DESC, notice_id DESC);
CREATE INDEX rm_notices_phase ON rm_notices (phase, created_at DESC, notice_id DESC);
-- The per-customer table of a notice with 100,000 rows: sorted by deadline, and its open cases.
CREATE INDEX rm_notice_customers_deadline ON rm_notice_customers (notice_id, deadline, customer_id);
CREATE INDEX rm_notice_customers_open ON rm_notice_customers (notice_id, customer_id)
    WHERE open_objections > 0;

-- The new columns and table are filled by replaying the event store: the read models are emptied
-- and their checkpoint removed, so the projector (in the worker, or `noticeflow projections
-- rebuild`) rebuilds them from the first event, exactly as a rebuild would.
TRUNCATE rm_notices, rm_notice_customers, rm_customer_subprocessors;
DELETE FROM projection_checkpoints WHERE name = 'read_models';
