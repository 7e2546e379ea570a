-- Which version of the notice text each message carried: a postponement changes the notice (a new
-- effective date is a new text, with a new hash), so a customer mailed before it and one resent
-- after it received different texts. The SHA-256 of NoticeSpec.text() of the spec each message was
-- rendered from; NULL for rows written before this column existed.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS text_sha256 text;
