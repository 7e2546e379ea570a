-- Webhooks (issue 14 item 3, docs/webhooks.md): subscriptions, the outbox of deliveries (one row
-- per subscription and matching event, written by the outbox follower in the store's global
-- order), and every attempt to deliver one.

CREATE TABLE webhook_subscriptions (
    subscription_id text PRIMARY KEY,                  -- wh_<random>
    url             text NOT NULL,
    events          text[] NOT NULL,                   -- notice.sent, notice.postponed, ...
    -- The Standard Webhooks secret (whsec_...), sealed: AES-256-GCM under a key derived from the
    -- key-encryption key (use "webhook-secrets"), the subscription id as associated data.
    secret_sealed   bytea NOT NULL,
    secret_key_id   text NOT NULL,                     -- which derived key sealed it
    created_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz
);
-- One live subscription per URL: a second `webhooks add` of the same URL is refused.
CREATE UNIQUE INDEX webhook_subscriptions_live_url
    ON webhook_subscriptions (url) WHERE removed_at IS NULL;

CREATE TABLE webhook_deliveries (
    delivery_id      bigserial PRIMARY KEY,
    subscription_id  text NOT NULL REFERENCES webhook_subscriptions,
    -- What makes the delivery unique for its subscription: the event's id, or for notice.sent
    -- "notice.sent/<notice id>" (a notice is sent once, whatever phase records follow).
    event_key        text NOT NULL,
    message_id       text NOT NULL UNIQUE,             -- webhook-id: a hash of (subscription, key)
    event_type       text NOT NULL,
    event_id         uuid,                             -- the store's event (null: a test event)
    body             text NOT NULL,                    -- the exact JSON POSTed (ids only)
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    next_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,                             -- our words (never the response body)
    finished_at      timestamptz,
    UNIQUE (subscription_id, event_key)
);
CREATE INDEX webhook_deliveries_pending
    ON webhook_deliveries (subscription_id, delivery_id) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id     bigint NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt         integer NOT NULL,
    attempted_at    timestamptz NOT NULL,
    status_code     integer,                           -- null: no response (timeout, refused...)
    error           text,
    duration_ms     integer NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    next_attempt_at timestamptz,
    PRIMARY KEY (delivery_id, attempt)
);
