-- The intake of record (noticeflow/intake.py). Every action of a customer or an operator is
-- written here first, with its receipt time: the legal moment it was received, set by the
-- database when the row is written, even while no worker runs. The workflow judges pending
-- receipts in receipt order (seq) by that time, and writes each one's outcome back here, so the
-- caller reads the outcome of its own action.
CREATE TABLE intake (
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    receipt_id      text PRIMARY KEY,
    notice_id       text NOT NULL REFERENCES notices,
    action          text NOT NULL,
    customer_id     text,
    idempotency_key text,                -- the sender's own key, when it gave one
    channel         text NOT NULL,
    payload         text NOT NULL,       -- JSON; sealed with the customer's key when it has one
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    status          text NOT NULL DEFAULT 'pending',  -- pending | accepted | duplicate | rejected
    reason          text,                -- why rejected, or what it duplicated
    mail_due        text,                -- a confirmation still to be mailed (its ledger kind)
    handled_at      timestamptz,
    kicked_at       timestamptz          -- when the sweeper last woke the notice for it
);
-- A repeat of one sender key is the same action: it gets the first receipt back.
CREATE UNIQUE INDEX intake_sender_key ON intake (notice_id, action, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX intake_pending ON intake (notice_id, seq) WHERE status = 'pending' OR mail_due IS NOT NULL;

-- An objection's content, blind-indexed with the customer's key: the same words again while a
-- case with them is open are a repeat; after it closed they open a new case.
ALTER TABLE objections ADD COLUMN content_ref text;
ALTER TABLE objections ADD COLUMN receipt_id text;

-- Ops settle a customer without activation (`notice exclude`): recorded with who and why.
ALTER TABLE recipients ADD COLUMN excluded_at timestamptz;
ALTER TABLE recipients ADD COLUMN excluded_reason text;   -- sealed
ALTER TABLE recipients ADD COLUMN excluded_by text;       -- sealed
