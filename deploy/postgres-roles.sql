-- noticeflow on a managed PostgreSQL: two roles, least privilege (issue 10, noticeflow/db.py).
--
--   noticeflow_owner    owns the database's schema and every object in it; runs the migrations
--                       (NOTICEFLOW_OWNER_DATABASE_URL, used only by `noticeflow db upgrade`).
--   noticeflow_runtime  what the worker, the web and the CLI connect as (NOTICEFLOW_DATABASE_URL).
--                       Owns nothing, creates nothing; on the event store it may only INSERT and
--                       SELECT, so it cannot UPDATE, DELETE or TRUNCATE an event, disable or drop
--                       the append-only trigger, replace its function or ALTER TABLE ... USING.
--
-- Run steps 1 and 2 as an administrator (the provider's admin user), with psql:
--   psql "$ADMIN_URL" -v owner_password="'...'" -v runtime_password="'...'" -f deploy/postgres-roles.sql
-- then migrate as the owner, which also grants the runtime role exactly what it needs
-- (idempotent; run it after every upgrade):
--   NOTICEFLOW_OWNER_DATABASE_URL=postgresql://noticeflow_owner:...@host/noticeflow \
--   NOTICEFLOW_DATABASE_URL=postgresql://noticeflow_runtime:...@host/noticeflow \
--   noticeflow db upgrade
-- The worker, web and CLI get only NOTICEFLOW_DATABASE_URL (the runtime role).

-- 1. Roles: neither is a superuser, and the runtime role is not a member of the owner role.
CREATE ROLE noticeflow_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
    PASSWORD :owner_password;
CREATE ROLE noticeflow_runtime LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS
    PASSWORD :runtime_password;
-- Some providers make the admin user create objects only for roles it is a member of:
GRANT noticeflow_owner TO CURRENT_USER;

-- 2. The database, owned by the owner (on PostgreSQL 15+ the owner then also owns the public
--    schema, through pg_database_owner).
CREATE DATABASE noticeflow OWNER noticeflow_owner;
\connect noticeflow
ALTER SCHEMA public OWNER TO noticeflow_owner;           -- PostgreSQL 14 and older
REVOKE CREATE ON SCHEMA public FROM PUBLIC;              -- the default since PostgreSQL 15
REVOKE CREATE ON DATABASE noticeflow FROM PUBLIC;         -- no new schemas either
GRANT CONNECT ON DATABASE noticeflow TO noticeflow_runtime;
GRANT USAGE ON SCHEMA public TO noticeflow_runtime;
-- Optional: no temporary tables for anyone but the owner (noticeflow uses none).
-- REVOKE TEMPORARY ON DATABASE noticeflow FROM PUBLIC;

-- 3. What `noticeflow db upgrade` grants after migrating (for reference; it does this itself,
--    table by table, revoking anything else first — see db.grant_runtime):
--      events                     SELECT, INSERT
--      event_streams              SELECT, INSERT, UPDATE   (stream heads move on append)
--      schema_migrations          SELECT
--      customer_erasures          SELECT, INSERT   (who was erased for good: never undone)
--      rm_* (read models)         SELECT, INSERT, UPDATE, DELETE, TRUNCATE (rebuilt from events)
--      every other table          SELECT, INSERT, UPDATE, DELETE
--      every sequence             USAGE, SELECT
--    and refuses a runtime role that is a superuser, the owner itself, a member of the owner,
--    or the owner of any object (after running as the only role: REASSIGN OWNED BY
--    noticeflow_runtime TO noticeflow_owner, as an administrator, once).
--
-- 4. Check (as noticeflow_runtime): each of these must fail with "permission denied" or
--    "must be owner":
--      UPDATE events SET event_type = 'x';  DELETE FROM events;  TRUNCATE events;
--      ALTER TABLE events DISABLE TRIGGER events_append_only;
--      CREATE TABLE x (id int);
--
-- The event store's stream heads are also signed with NOTICEFLOW_SIGNING_KEY, which the
-- database never sees: even the owner, who can rewrite rows, cannot re-sign a rewritten stream
-- (`noticeflow evidence verify --notice ID` fails with "head signature does not match").
