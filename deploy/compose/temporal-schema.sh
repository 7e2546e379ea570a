#!/bin/sh
# Temporal's own schema on its PostgreSQL (run by temporalio/admin-tools before the server
# starts; safe to run again: `setup-schema -v 0.0` leaves a newer schema alone and
# `update-schema` applies only what is missing). Upgrading the Temporal image upgrades the schema
# on the next `docker compose up`.
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
tool() { temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "${DB_PORT:-5432}" "$@"; }
for db in temporal temporal_visibility; do
    # `create` fails when the database exists (every start after the first); a real problem
    # (unreachable, wrong password) fails the setup-schema below instead.
    tool --db "$db" create || echo "database $db: already there"
done
tool --db temporal setup-schema -v 0.0
tool --db temporal update-schema -d /etc/temporal/schema/postgresql/v12/temporal/versioned
tool --db temporal_visibility setup-schema -v 0.0
tool --db temporal_visibility update-schema -d /etc/temporal/schema/postgresql/v12/visibility/versioned
echo "Temporal schema is up to date"
