-- E-mail subscriptions to the public sub-processor list (issue 14 item 2, docs/public.md):
-- subscribers with their address sealed under a key of their own (erasing one deletes the key),
-- and the mails owed to them (confirmations, and informational copies of notices), each sent at
-- least once with a deterministic Message-ID.

CREATE TABLE subscribers (
    subscriber_id        text PRIMARY KEY,              -- sub_<16 random hex>: all a link carries
    status               text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'confirmed', 'unsubscribed', 'erased', 'expired')),
    -- The address, sealed (AES-256-GCM) with the subscriber's own key (subscriber_keys); NULL
    -- once erased.
    email_sealed         text,
    -- A keyed hash of the normalised address (HMAC under a key derived from the key-encryption
    -- key): finds a repeat subscription without reading any address. NULL once erased.
    email_index          text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    confirmed_at         timestamptz,
    ended_at             timestamptz,                   -- unsubscribed, erased or expired
    ended_by             text CHECK (ended_by IN ('unsubscribe', 'operator', 'expired')),
    confirmations_sent   integer NOT NULL DEFAULT 0,    -- bounded (no mail-bombing by the form)
    last_confirmation_at timestamptz,
    CHECK ((status IN ('pending', 'confirmed')) = (email_sealed IS NOT NULL))
);
-- One live subscription per address: subscribing again finds it.
CREATE UNIQUE INDEX subscribers_live_email ON subscribers (email_index)
    WHERE email_index IS NOT NULL;

-- Each subscriber's root key, wrapped by the key-encryption key (as customer_keys): deleting the
-- row makes the sealed address unreadable for good (crypto-shredding).
CREATE TABLE subscriber_keys (
    subscriber_id text PRIMARY KEY REFERENCES subscribers ON DELETE CASCADE,
    wrapped       bytea NOT NULL,
    kek_id        text NOT NULL
);

CREATE TABLE subscriber_mails (
    mail_id          bigserial PRIMARY KEY,
    subscriber_id    text NOT NULL REFERENCES subscribers,
    -- confirm: the double opt-in mail; sent, postponed, cancelled: a notice's informational copy.
    kind             text NOT NULL CHECK (kind IN ('confirm', 'sent', 'postponed', 'cancelled')),
    notice_id        text,                              -- NULL for a confirmation
    -- Unique per subscriber: "confirm/<n>", "<notice>/sent", "<notice>/postponed/<event id>",
    -- "<notice>/cancelled". The Message-ID is a hash of (subscriber, key): a retry carries it.
    mail_key         text NOT NULL,
    event_id         uuid,                              -- the store's event it copies
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),  -- also the lease of a sender at work
    first_attempt_at timestamptz,
    last_attempt_at  timestamptz,
    finished_at      timestamptz,
    last_error       text,                              -- our words and SMTP codes only
    UNIQUE (subscriber_id, mail_key)
);
CREATE INDEX subscriber_mails_due ON subscriber_mails (next_attempt_at, mail_id)
    WHERE status = 'pending';
