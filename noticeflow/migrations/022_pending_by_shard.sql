-- Scale-out (issue 13): each sending activity walks the customers of its shard still pending, in
-- id order. Without an index for it, every batch read the whole notice's recipients and hashed
-- each id (a sequential scan: 42 ms a batch at 100,000 customers, most of PostgreSQL's CPU while
-- sending). An audience of 16,000 customers or more is always sent in MAX_SEND_SHARDS = 32 shards
-- (noticeflow/contracts.py, pinned), so this index serves every large notice; a smaller one scans
-- at most 16,000 rows. Partial: a customer leaves it once its delivery is recorded.
CREATE INDEX IF NOT EXISTS recipients_pending_by_shard
    ON recipients (notice_id, send_shard(customer_id, 32), customer_id)
    WHERE delivery = 'pending';
