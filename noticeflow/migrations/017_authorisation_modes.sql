-- Authorisation modes per customer (issue 12): what each customer's own contract asks before a
-- sub-processor is used for it. general: silence is deemed acceptance; specific: silence is
-- refusal (the customer must authorise, on every notice); dora: approve, object or request
-- changes (a request is a case that holds activation until ops resolve it).
ALTER TABLE customers ADD COLUMN authorisation text NOT NULL DEFAULT 'general'
    CHECK (authorisation IN ('general', 'specific', 'dora'));
-- The mode as frozen with the audience (a projection of audience_snapshotted's terms).
ALTER TABLE recipients ADD COLUMN authorisation text NOT NULL DEFAULT 'general'
    CHECK (authorisation IN ('general', 'specific', 'dora'));
-- What a case is: an objection, or a DORA request for changes (a projection of
-- objection_received's `request`).
ALTER TABLE objections ADD COLUMN request text NOT NULL DEFAULT 'objection'
    CHECK (request IN ('objection', 'changes'));
-- The read models (`notice show`, the dashboard): each customer's mode, and what its latest case
-- is (an objection or a request for changes).
ALTER TABLE rm_notice_customers ADD COLUMN authorisation text NOT NULL DEFAULT 'general';
ALTER TABLE rm_notice_customers ADD COLUMN objection_request text;
