-- Customer keys stored wrapped (noticeflow/crypto.py): a customer's root key is kept only as
-- `wrapped`, AES-GCM under a key-encryption key from the environment named by `kek_id`; the
-- database alone never holds a usable key. Rows from before (`key` in clear) are wrapped the first
-- time they are loaded or by `noticeflow keys rewrap`, which clears `key`.
ALTER TABLE customer_keys
    ADD COLUMN wrapped bytea,
    ADD COLUMN kek_id  text,
    ALTER COLUMN key DROP NOT NULL,
    ADD CONSTRAINT customer_keys_wrapped_or_legacy
        CHECK ((wrapped IS NOT NULL AND kek_id IS NOT NULL) OR key IS NOT NULL);

-- Customers erased for good (ids only): no key is ever made for them again, an import naming
-- one is refused, and every action for one is a recorded rejection.
CREATE TABLE customer_erasures (
    customer_id  text PRIMARY KEY,
    erased_at    timestamptz NOT NULL DEFAULT now()
);
