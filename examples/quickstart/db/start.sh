#!/bin/sh
# Starts PostgreSQL on the data volume. On the first start (an empty volume) it makes the
# cluster and runs the init SQL mounted from compose (configs: init_sql) as the superuser,
# with the server reachable through its socket only, so the healthcheck (over TCP) says
# healthy only once the database is ready.
set -eu
init_sql=${INIT_SQL:-/etc/quickstart/init.sql}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "start-postgres: first start: making the cluster in $PGDATA"
    initdb --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl --wait --silent -o "-c listen_addresses=''" start
    if [ -f "$init_sql" ]; then
        echo "start-postgres: running $init_sql"
        psql --quiet --no-psqlrc -v ON_ERROR_STOP=1 --username=postgres --dbname=postgres -f "$init_sql"
    fi
    pg_ctl --wait --silent -m fast stop
fi
exec postgres -c listen_addresses='*'
