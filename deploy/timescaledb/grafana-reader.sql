-- Grafana's read-only role for docker-compose.yml. The official image runs this once, as
-- the superuser, in POSTGRES_DB (herald), when it initialises an empty data volume.
-- Herald's migrations run later and as `postgres`, so SELECT on the tables they create is
-- granted through default privileges (chunks of hypertables inherit the grants).
-- The password is for the local stack only; deploy/kubernetes expects real secrets.
CREATE ROLE grafana_reader LOGIN PASSWORD 'grafana';
GRANT CONNECT ON DATABASE herald TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
-- Statistics queries never need long: bound them.
ALTER ROLE grafana_reader SET statement_timeout = '30s';
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
