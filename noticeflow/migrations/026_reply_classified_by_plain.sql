-- Who classified a reply is the vendor's user id (or "auto"), not the customer's personal data:
-- from now on replies.classified_by is kept in clear, so erasing the customer no longer erases
-- who classified its replies (ops stay accountable, as for every other ops action's `by`).
-- Erasure still blanks the sealed columns in the erasing transaction; classified_by only where
-- it is still sealed (rows classified before this migration, under the customer's key).
CREATE OR REPLACE FUNCTION replies_erase() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE replies SET
        sender = CASE WHEN sender IS NULL THEN NULL ELSE '[erased]' END,
        subject = CASE WHEN subject IS NULL THEN NULL ELSE '[erased]' END,
        body = CASE WHEN body IS NULL THEN NULL ELSE '[erased]' END,
        full_text = CASE WHEN full_text IS NULL THEN NULL ELSE '[erased]' END,
        classified_by = CASE WHEN classified_by LIKE 'enc_:%' THEN '[erased]'
                             ELSE classified_by END
    WHERE customer_id = NEW.customer_id;
    RETURN NEW;
END $$;

COMMENT ON COLUMN replies.classified_by IS
    'who classified it: the vendor''s user id or "auto", in clear (sealed only on rows classified before migration 026)';
