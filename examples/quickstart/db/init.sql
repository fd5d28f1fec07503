-- Run once by the db service when its data volume is new (see db/start.sh): the
-- application's role and database. The tables are made by the migrate service.
CREATE ROLE quickstart LOGIN PASSWORD 'quickstart';
CREATE DATABASE quickstart OWNER quickstart;
