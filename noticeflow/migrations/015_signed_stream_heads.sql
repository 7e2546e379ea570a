-- Signed stream heads (noticeflow/eventstore.py): each append signs (stream id, version, head
-- hash) with Ed25519 under a key derived from NOTICEFLOW_SIGNING_KEY, which the database never
-- sees. A database owner who rewrites a stream and recomputes its hashes cannot re-sign its head,
-- so `evidence verify` catches it. `head_key_id` names the public key (Keyring.key_id of its raw
-- 32 bytes) so that heads signed before a key rotation still verify under the previous key.
-- Heads written before this migration have no signature until `noticeflow up` (or
-- eventstore.sign_unsigned_heads) checks their chains and signs them.
ALTER TABLE event_streams
    ADD COLUMN head_signature bytea,
    ADD COLUMN head_key_id text;
