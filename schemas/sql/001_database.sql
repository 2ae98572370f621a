-- meterline's database. Every statement in schemas/sql is idempotent: `meterline migrate`
-- runs them all, in file order, on every start.
CREATE DATABASE IF NOT EXISTS {database};
