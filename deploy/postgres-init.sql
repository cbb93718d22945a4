-- Runs once, when the postgres container initialises an empty data directory
-- (mounted into /docker-entrypoint-initdb.d by docker-compose.yml).
--
-- One role and one database per side, as the architecture says: the control plane never touches
-- ticketing tables and the executors never touch scheduler tables. Each role owns its database,
-- so its migrations can create tables in the public schema (Postgres 15+: pg_database_owner).
-- Development passwords: change them (and the URLs in docker-compose.yml) for anything real.
CREATE ROLE ticketmax LOGIN PASSWORD 'ticketmax';
CREATE DATABASE ticketmax OWNER ticketmax;

CREATE ROLE ticketing LOGIN PASSWORD 'ticketing';
CREATE DATABASE ticketing OWNER ticketing;
