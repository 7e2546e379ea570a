#!/bin/sh
# First start of the records' PostgreSQL (docker-entrypoint-initdb.d): the two roles and the
# database of deploy/postgres-roles.sql, the same script a managed PostgreSQL is set up with.
# Passwords come from deploy/.env (RECORDS_OWNER_PASSWORD, RECORDS_RUNTIME_PASSWORD).
set -eu
: "${RECORDS_OWNER_PASSWORD:?set RECORDS_OWNER_PASSWORD in deploy/.env}"
: "${RECORDS_RUNTIME_PASSWORD:?set RECORDS_RUNTIME_PASSWORD in deploy/.env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="'$RECORDS_OWNER_PASSWORD'" \
    -v runtime_password="'$RECORDS_RUNTIME_PASSWORD'" \
    -f /deploy/postgres-roles.sql
