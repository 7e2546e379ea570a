-- While a notice's intake round runs (activities/intake.py), it takes every receipt written
-- meanwhile; the web then does not signal the notice for each one (noticeflow/waker.py).
ALTER TABLE notices ADD COLUMN intake_round_at timestamptz;
