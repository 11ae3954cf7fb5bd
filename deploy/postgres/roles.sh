#!/bin/sh
# The two database roles (README, "Database roles"), made once by an administrator:
#   - the migration role owns the database, its schema and every table (`recon migrate` runs as it);
#   - the service role owns nothing: `recon migrate` grants it what the service needs, and only
#     SELECT and INSERT on the audit trail (outcomes, operator_log).
# compose.yaml mounts this file into the postgres image's /docker-entrypoint-initdb.d, which runs
# it as the superuser on the first start of an empty data directory. By hand, as an administrator:
#   POSTGRES_USER=postgres POSTGRES_DB=recon RECON_OWNER_PASSWORD=... RECON_SERVICE_PASSWORD=... \
#     sh deploy/postgres/roles.sh
# (with PGHOST etc. pointing at the server; the database must exist: createdb recon).
set -eu
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v database="$POSTGRES_DB" \
    -v owner="${RECON_OWNER_ROLE:-recon_owner}" -v owner_password="$RECON_OWNER_PASSWORD" \
    -v service="${RECON_SERVICE_ROLE:-recon}" -v service_password="$RECON_SERVICE_PASSWORD" \
    <<'SQL'
CREATE ROLE :"owner" LOGIN NOSUPERUSER NOCREATEROLE PASSWORD :'owner_password';
CREATE ROLE :"service" LOGIN NOSUPERUSER NOCREATEROLE PASSWORD :'service_password';
ALTER DATABASE :"database" OWNER TO :"owner";
ALTER SCHEMA public OWNER TO :"owner";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
