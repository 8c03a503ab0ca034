-- What apalis' statements cost must not grow with the history that apalis.jobs keeps
-- (7 days of ended jobs by default). Two of them did (docs/APALIS.md, "The cost of
-- history"; BENCHMARKS.md, "Soak"):
--
-- 1. The acknowledgement joins the ids it acknowledges with the jobs of its worker
--    (`WHERE lock_by = $worker`). A worker's name is new to the table's statistics
--    until the next ANALYZE, and once the statistics' list of most common values covers
--    the table (the names of the week's workers), PostgreSQL estimates a new name at
--    one row: it reads every job the worker has held, through the index on lock_by, to
--    find the few it acknowledges. With one most-common value at most (statistics
--    target 1), any name is estimated at its share of the table, and the plan looks
--    each id up by its key instead: rows read = ids acknowledged, whatever the history.
--
-- 2. The takeover of dead workers' jobs (apalis' reenqueue_orphaned, which our
--    heartbeat runs for each queue) looks for claimed and running jobs of workers
--    silent for a while. Nothing indexes a job's status since apalis' own
--    migrations dropped that index, so it scanned the whole table at every beat. A
--    partial index of the claimed and running jobs by worker holds a few thousand rows
--    at most, however long the history.
--
-- Both live in queue_tuning(), which this migration runs when apalis' tables exist,
-- and which shared::db::migrate runs again after both migrators, so they hold
-- whichever migrator runs first (ours may run on a database where apalis' has not).
-- Neither changes what a statement does, only how PostgreSQL finds its rows.
CREATE FUNCTION queue_tuning() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('apalis.jobs') IS NULL THEN
        RETURN;
    END IF;
    -- One process at a time: two creating the missing index together would collide.
    PERFORM pg_advisory_xact_lock(hashtext('queue_tuning'));
    EXECUTE 'CREATE INDEX IF NOT EXISTS jobs_claimed_by_worker_idx ON apalis.jobs (lock_by)
             WHERE status = ''Running'' OR status = ''Queued''';
    IF (SELECT attstattarget FROM pg_attribute
        WHERE attrelid = 'apalis.jobs'::regclass AND attname = 'lock_by') IS DISTINCT FROM 1 THEN
        ALTER TABLE apalis.jobs ALTER COLUMN lock_by SET STATISTICS 1;
        -- At once, not at autovacuum's next pass: statistics gathered before keep
        -- their long list of most common values until then.
        ANALYZE apalis.jobs (lock_by);
    END IF;
END;
$$;
COMMENT ON FUNCTION queue_tuning() IS 'Keeps the cost of apalis'' acknowledgement and takeover flat as apalis.jobs grows; idempotent, run after every migration (migrations/20261205000006_queue_cost_flat.sql).';

SELECT queue_tuning();
