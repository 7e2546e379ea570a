-- noticeflow schema, version 1. Personal data (names, addresses, reasons) lives only here.

-- One AES-GCM key per customer (noticeflow/crypto.py). Deleting a key erases that customer's
-- personal data everywhere it is stored sealed, events included.
CREATE TABLE customer_keys (
    customer_id  text PRIMARY KEY,
    key          bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    customer_id  text PRIMARY KEY,
    name         text NOT NULL,
    region       text NOT NULL,
    services     text[] NOT NULL DEFAULT '{}',
    timezone     text NOT NULL,
    window_days  integer,
    window_unit  text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customer_contacts (
    customer_id  text NOT NULL REFERENCES customers ON DELETE CASCADE,
    position     integer NOT NULL,
    email        text NOT NULL,
    PRIMARY KEY (customer_id, position)
);

CREATE TABLE notices (
    notice_id       text PRIMARY KEY,
    spec            jsonb NOT NULL,
    notice_text     text NOT NULL,
    text_sha256     text NOT NULL,
    author          text NOT NULL,
    phase           text NOT NULL DEFAULT 'draft',
    subprocessor    text NOT NULL,
    effective_at    timestamptz NOT NULL,
    window_closes_at timestamptz,
    approved_by     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The audience as frozen when sending started (rule 3). One row per customer, with its terms.
CREATE TABLE recipients (
    notice_id       text NOT NULL REFERENCES notices,
    customer_id     text NOT NULL,
    name            text NOT NULL,
    region          text NOT NULL,
    services        text[] NOT NULL,
    timezone        text NOT NULL,
    window_days     integer,
    window_unit     text,
    snapshot_at     timestamptz NOT NULL,
    delivery        text NOT NULL DEFAULT 'pending',
    delivered_at    timestamptz,
    deadline        timestamptz,
    opted_in        boolean NOT NULL DEFAULT false,
    opted_in_at     timestamptz,
    deemed_accepted_at timestamptz,
    activated       boolean NOT NULL DEFAULT false,
    activated_at    timestamptz,
    verdict         text,
    settled         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (notice_id, customer_id)
);
CREATE INDEX recipients_unsettled ON recipients (notice_id) WHERE NOT settled;

-- The contacts frozen with the audience; a resend to new contacts adds a new generation.
CREATE TABLE recipient_contacts (
    notice_id    text NOT NULL,
    customer_id  text NOT NULL,
    generation   integer NOT NULL,
    position     integer NOT NULL,
    email        text NOT NULL,
    snapshot_at  timestamptz NOT NULL,
    PRIMARY KEY (notice_id, customer_id, generation, position),
    FOREIGN KEY (notice_id, customer_id) REFERENCES recipients
);

-- The delivery ledger: one row per (notice, customer, contact, kind of mail).
CREATE TABLE deliveries (
    notice_id    text NOT NULL,
    customer_id  text NOT NULL,
    contact_ref  text NOT NULL,          -- blind index of the address (crypto.blind_index)
    email        text NOT NULL,          -- sealed address
    kind         text NOT NULL,
    message_id   text NOT NULL,
    status       text NOT NULL,          -- sending | accepted | failed
    smtp_reply   text,
    attempts     integer NOT NULL DEFAULT 1,
    first_attempt_at timestamptz NOT NULL,
    finished_at  timestamptz,
    PRIMARY KEY (notice_id, customer_id, contact_ref, kind)
);

CREATE TABLE objections (
    notice_id        text NOT NULL REFERENCES notices,
    idempotency_key  text NOT NULL,
    customer_id      text NOT NULL,
    received_at      timestamptz NOT NULL,
    channel          text NOT NULL,
    objected_by      text NOT NULL,
    reason           text NOT NULL,
    timely           boolean NOT NULL,
    status           text NOT NULL,     -- open | withdrawn | excluded | terminated
    resolved_by      text,
    resolved_at      timestamptz,
    resolution_note  text,
    PRIMARY KEY (notice_id, idempotency_key)
);
CREATE INDEX objections_by_customer ON objections (notice_id, customer_id);

-- Which customer has which sub-processor enabled, since when, by which notice.
CREATE TABLE subprocessor_enablements (
    customer_id   text NOT NULL,
    subprocessor  text NOT NULL,
    enabled       boolean NOT NULL,
    since         timestamptz NOT NULL,
    notice_id     text NOT NULL,
    PRIMARY KEY (customer_id, subprocessor)
);

-- The event store (see noticeflow/eventstore.py). Each stream has a version and a SHA-256 hash
-- chain; the global order a subscriber follows is (tx_id, position), read only below the oldest
-- open transaction so an event that commits out of order is never skipped.
CREATE TABLE event_streams (
    stream_id    text PRIMARY KEY,
    version      bigint NOT NULL,
    head_hash    bytea NOT NULL,
    head_tx      xid8                -- transaction of the last append: keeps versions in tx order
);

CREATE TABLE events (
    position       bigint GENERATED BY DEFAULT AS IDENTITY,  -- drawn from its sequence at append
    tx_id          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id      text NOT NULL,
    stream_version bigint NOT NULL,
    event_id       uuid NOT NULL UNIQUE,
    event_type     text NOT NULL,
    schema_version integer NOT NULL DEFAULT 1,
    data           jsonb NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    prev_hash      bytea NOT NULL,
    hash           bytea NOT NULL,
    PRIMARY KEY (stream_id, stream_version)
);
CREATE INDEX events_global_order ON events (tx_id, position);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('noticeflow_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Read models, built only from events by catch-up projections (noticeflow/projections.py). Each
-- projection's checkpoint is written in the same transaction as its read-model changes.
CREATE TABLE projection_checkpoints (
    name      text PRIMARY KEY,
    tx_id     bigint NOT NULL DEFAULT 0,
    position  bigint NOT NULL DEFAULT 0
);

CREATE TABLE rm_notices (
    notice_id        text PRIMARY KEY,
    title            text NOT NULL,
    subprocessor     text NOT NULL,
    opt_in           boolean NOT NULL,
    author           text NOT NULL,
    text_sha256      text NOT NULL,
    phase            text NOT NULL,
    effective_at     timestamptz NOT NULL,
    window_closes_at timestamptz,
    approved_by      text,
    customers        integer NOT NULL DEFAULT 0,
    open_objections  integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE TABLE rm_notice_customers (
    notice_id          text NOT NULL,
    customer_id        text NOT NULL,
    timezone           text,
    delivery           text NOT NULL DEFAULT 'pending',
    delivered_at       timestamptz,
    deadline           timestamptz,
    objection_status   text,
    objection_timely   boolean,
    open_objections    integer NOT NULL DEFAULT 0,
    opted_in           boolean NOT NULL DEFAULT false,
    deemed_accepted_at timestamptz,
    activated          boolean NOT NULL DEFAULT false,
    activated_at       timestamptz,
    verdict            text,
    settled            boolean NOT NULL DEFAULT false,
    PRIMARY KEY (notice_id, customer_id)
);

CREATE TABLE rm_customer_subprocessors (
    customer_id   text NOT NULL,
    subprocessor  text NOT NULL,
    enabled       boolean NOT NULL,
    since         timestamptz NOT NULL,
    notice_id     text NOT NULL,
    PRIMARY KEY (customer_id, subprocessor)
);
