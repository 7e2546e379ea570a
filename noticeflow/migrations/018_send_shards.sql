-- Scale-out (issue 13): one notice's mailing is split into shards that any worker may send.
--
-- send_shard(customer_id, shards): which of `shards` shards mails this customer. A pure function
-- of the id (two bytes of its MD5, so shards are even in size and the same on every PostgreSQL);
-- each sending activity selects `send_shard(customer_id, $shards) = $shard`.
CREATE OR REPLACE FUNCTION send_shard(customer_id text, shards integer) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
        SELECT ((get_byte(decode(md5(customer_id), 'hex'), 0) * 256
                 + get_byte(decode(md5(customer_id), 'hex'), 1)) % shards)::integer
    $$;

-- The pace of each SMTP relay, shared by every worker (NOTICEFLOW_SMTP_RELAY_RATE): a worker
-- reserves the next slice of the relay's time for a few messages by moving `next_at` on, in one
-- statement, and sends them in that slice. Keyed by host:port (no credentials).
CREATE TABLE relay_pace (
    relay   text PRIMARY KEY,
    next_at timestamptz NOT NULL
);
