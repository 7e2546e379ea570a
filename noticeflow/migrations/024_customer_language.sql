-- Languages (issue 14 item 5): the language each customer's mail is written in, a BCP 47 tag
-- whose language noticeflow ships templates for (noticeflow/domain/language.py: en, de), with
-- an optional region for dates and numbers (de-AT, en-GB). English is the default: a customer
-- imported before this column, or with a blank cell, is mailed in English as before.
ALTER TABLE customers ADD COLUMN language text NOT NULL DEFAULT 'en';
-- The language as frozen with the audience (a projection of audience_snapshotted's terms: a
-- customer frozen in English has no language there, so older snapshots hash as they did).
ALTER TABLE recipients ADD COLUMN language text NOT NULL DEFAULT 'en';
