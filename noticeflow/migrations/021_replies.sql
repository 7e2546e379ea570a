-- Replies to notice mails (issue 14 item 4, docs/replies.md).
--
-- reply_tokens: each (notice, customer)'s reply token, a keyed HMAC of the two ids (ids only: no
-- address, no name), so a reply to reply+<token>@<reply domain> finds its notice and customer.
-- The mailer derives a token with one HMAC per mail and writes nothing; the tokens of a notice's
-- frozen audience are written here once per link key (reply_token_fills) by the inbound endpoint,
-- when it starts, every minute, and whenever a token is not found.
CREATE TABLE reply_tokens (
    token       text PRIMARY KEY,
    notice_id   text NOT NULL,
    customer_id text NOT NULL,
    key_id      text NOT NULL                     -- which link key derived it (rotation)
);
CREATE INDEX reply_tokens_recipient ON reply_tokens (notice_id, customer_id);

CREATE TABLE reply_token_fills (
    notice_id   text NOT NULL,
    key_id      text NOT NULL,
    tokens      integer NOT NULL,
    filled_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (notice_id, key_id)
);

-- Every mail the inbound endpoint took for a reply address (or recorded as rejected), one row per
-- reply address it was sent to. received_at is when the endpoint accepted it: the receipt time an
-- objection or opt-in classified from it carries into the intake of record (rule 7).
-- Personal data is sealed with the customer's key ("replies.<column>"): the sender, the subject,
-- the reply's own words and the whole text. A rejected reply keeps ids and our reason only.
CREATE TABLE replies (
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    reply_id        text PRIMARY KEY,             -- rp-<random>
    notice_id       text REFERENCES notices,      -- null: the token named no notice we know
    customer_id     text,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    status          text NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'classified', 'rejected')),
    reason          text,                          -- why rejected, in our words (no free text)
    message_ref     text,                          -- keyed hash of the mail's Message-ID: a mail
                                                   -- delivered twice is one reply
    size_bytes      integer,
    sender          text,                          -- sealed
    subject         text,                          -- sealed
    body            text,                          -- sealed: the reply's own words (stripped)
    full_text       text,                          -- sealed: the whole text, quotes included
    contact_match   boolean NOT NULL DEFAULT false, -- the sender is one of the customer's contacts
    classified_as   text CHECK (classified_as IN ('objection', 'opt_in', 'question')),
    classified_by   text,                          -- sealed (who, or "auto" for an exact command)
    classified_at   timestamptz,
    receipt_id      text                           -- the intake receipt it became
);
CREATE UNIQUE INDEX replies_once ON replies (notice_id, customer_id, message_ref)
    WHERE message_ref IS NOT NULL;
CREATE INDEX replies_new ON replies (notice_id, seq) WHERE status = 'new';

-- Erasure reaches the replies in the erasing transaction: the key is deleted (crypto-shredding),
-- and the sealed columns are blanked as well, like every other record table.
CREATE FUNCTION replies_erase() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE replies SET
        sender = CASE WHEN sender IS NULL THEN NULL ELSE '[erased]' END,
        subject = CASE WHEN subject IS NULL THEN NULL ELSE '[erased]' END,
        body = CASE WHEN body IS NULL THEN NULL ELSE '[erased]' END,
        full_text = CASE WHEN full_text IS NULL THEN NULL ELSE '[erased]' END,
        classified_by = CASE WHEN classified_by IS NULL THEN NULL ELSE '[erased]' END
    WHERE customer_id = NEW.customer_id;
    RETURN NEW;
END $$;
CREATE TRIGGER replies_erase AFTER INSERT ON customer_erasures
    FOR EACH ROW EXECUTE FUNCTION replies_erase();
