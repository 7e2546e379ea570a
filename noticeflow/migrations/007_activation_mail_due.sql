-- An activation mail owed to a customer, set in the same transaction that switches it on and
-- cleared once the mail went through the ledger: a round interrupted between the two (a worker
-- or database restart) mails it on the next round instead of never.
ALTER TABLE recipients ADD COLUMN activation_mail_due boolean NOT NULL DEFAULT false;
CREATE INDEX recipients_activation_mail_due ON recipients (notice_id) WHERE activation_mail_due;
