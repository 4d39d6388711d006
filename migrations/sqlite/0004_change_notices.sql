-- Kept in step with migrations/postgres/0004_change_notices.sql, which adds
-- triggers that tell other instances about changes to sessions, members, roles
-- and API keys. A SQLite file has one serving process, which sees every write
-- itself, so there is nothing to add here.
SELECT 1;
