-- meterline's database. Each file in schemas/sql is one forward-only migration, applied
-- once and recorded in schema_migrations (sinks/migrations.py); never edit an applied file,
-- add a new one. Statements stay idempotent (IF NOT EXISTS): a crash between applying a
-- file and recording it applies the file again.
CREATE DATABASE IF NOT EXISTS {database};
