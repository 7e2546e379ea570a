-- SMTP replies as code, enhanced status and a sealed text (issue 10).
--
-- A relay's reply often repeats the recipient's address or name ("550 5.1.1 <jane@acme.example>:
-- Recipient address rejected"). From now on the ledger keeps the reply's code (550) and enhanced
-- status ("5.1.1", RFC 3463; NULL when the server gave none), which identify nobody, and its text
-- sealed with the customer's key (field "deliveries.smtp_text"): erasing the customer makes the
-- text unreadable. New rows never write `smtp_reply`; a row's next outcome clears it.
ALTER TABLE deliveries
    ADD COLUMN smtp_code   integer,
    ADD COLUMN smtp_status text,
    ADD COLUMN smtp_text   text;   -- sealed (crypto.CustomerKey.seal, "deliveries.smtp_text")

COMMENT ON COLUMN deliveries.smtp_reply IS
    'Unsealed reply of rows written before migration 014 (readers prefer smtp_code/status/text)';

-- Rows written before: the code and enhanced status read from the old reply, so that every row
-- has them (the readers' fallback parses the same way: noticeflow/mail.py stored_reply).
UPDATE deliveries
SET smtp_code = substring(smtp_reply FROM '^([2-5][0-9][0-9])(?:[ -]|$)')::integer,
    smtp_status = substring(
        smtp_reply FROM '^[2-5][0-9][0-9][ -]+([2-5]\.[0-9]{1,3}\.[0-9]{1,3})(?:\s|$)'
    )
WHERE smtp_reply IS NOT NULL AND smtp_reply ~ '^[2-5][0-9][0-9](?:[ -]|$)';

-- An enhanced status belongs to its code's class (a 5.x.x for a 5yz reply), as the parser says.
UPDATE deliveries SET smtp_status = NULL
WHERE smtp_status IS NOT NULL AND left(smtp_status, 1) <> left(smtp_code::text, 1);

-- Customers already erased (their key deleted, or marked in customer_erasures): their unsealed
-- reply texts are removed. It is safe: only the evidence export and the mailer's ledger read
-- them, and both then show the code and status (the text reads as [erased], like every other
-- trace of these customers). Live customers keep their old text until the row's next outcome
-- (sealing needs their key, which SQL never holds); erasing a customer must clear it too.
UPDATE deliveries d SET smtp_reply = NULL
WHERE smtp_reply IS NOT NULL
  AND (NOT EXISTS (SELECT 1 FROM customer_keys k WHERE k.customer_id = d.customer_id)
       OR EXISTS (SELECT 1 FROM customer_erasures e WHERE e.customer_id = d.customer_id));
