-- A statement about one session must read that session's operations, whatever else
-- is in flight and whatever the statistics say. It did not (BENCHMARKS.md, "Soak"):
-- the release of a session's next question (release_next_question), the api's count of
-- a session's unfinished operations and their like filter on the session and on
-- `status IN ('pending', 'processing')`, and three indexes serve that status
-- predicate without the session: the partial `operations_unfinished_idx`, and
-- `operations_status_idx` and `operations_operation_type_status_idx`. After a quiet
-- hour (the last ANALYZE saw nothing unfinished), PostgreSQL estimates the unfinished
-- operations at one row, finds those indexes as cheap as the session's own, and picks
-- one: each question then read every operation in flight, and every dead entry since
-- the last vacuum, to keep the session's few (6.3 ms a question on a seeded week).
--
-- Now every index of unfinished operations leads with the session
-- (`operations_session_unfinished_idx`, session_id and accepted_seq), so whichever
-- plan is chosen, a session's statement reads a session's rows. What reads all
-- unfinished operations (the gauges, the reconciler) reads that same partial index
-- whole: its size is the work in flight.
DROP INDEX operations_unfinished_idx;
DROP INDEX operations_status_idx;
DROP INDEX operations_operation_type_status_idx;

-- The ended count groups finished operations by status: with the status in this index,
-- it reads the index alone (an index-only scan), not the table. Built without
-- CONCURRENTLY (a migration runs in a transaction): writes to operations wait for the
-- build, 3.4-3.9 s on 5.5 M operations here. To avoid even that, create it by hand
-- CONCURRENTLY first under another name, and this migration's DROP and CREATE become a
-- rename away (DROP INDEX CONCURRENTLY the old one, ALTER INDEX ... RENAME).
DROP INDEX operations_finished_idx;
CREATE INDEX operations_finished_idx ON operations (updated_at, status)
    WHERE status IN ('completed', 'failed');

-- Vacuum after 1 % of the table has changed, not 20 %: each question leaves three dead
-- versions of its operation and of its job, and on a seeded week (5.5 M rows) the
-- default waited for 1.1 M of them. Until a vacuum, the partial indexes that the
-- gauges read whole keep every dead entry (count_in_play grew from under 1 ms to 55 ms
-- in 30 minutes). `vacuum_index_cleanup = on`: each vacuum also clears the indexes,
-- which PostgreSQL otherwise skips when the dead rows sit on under 2 % of the pages,
-- as they do with this small a share.
ALTER TABLE operations SET (autovacuum_vacuum_scale_factor = 0.01,
                            autovacuum_vacuum_threshold = 1000,
                            vacuum_index_cleanup = on);

-- On apalis' table, so in queue_tuning(), which holds whichever migrator runs first
-- (the whole function again: CREATE OR REPLACE takes the whole body).
CREATE OR REPLACE FUNCTION queue_tuning() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('apalis.jobs') IS NULL THEN
        RETURN;
    END IF;
    -- One process at a time: two creating the missing index together would collide.
    PERFORM pg_advisory_xact_lock(hashtext('queue_tuning'));
    EXECUTE 'CREATE INDEX IF NOT EXISTS jobs_claimed_by_worker_idx ON apalis.jobs (lock_by)
             WHERE status = ''Running'' OR status = ''Queued''';
    EXECUTE 'CREATE INDEX IF NOT EXISTS jobs_ended_idx
             ON apalis.jobs ((coalesce(done_at, lock_at, run_at)), job_type, status)
             WHERE status IN (''Done'', ''Killed'') OR (status = ''Failed'' AND attempts >= max_attempts)';
    IF (SELECT attstattarget FROM pg_attribute
        WHERE attrelid = 'apalis.jobs'::regclass AND attname = 'lock_by') IS DISTINCT FROM 1 THEN
        ALTER TABLE apalis.jobs ALTER COLUMN lock_by SET STATISTICS 1;
        -- At once, not at autovacuum's next pass: statistics gathered before keep
        -- their long list of most common values until then.
        ANALYZE apalis.jobs (lock_by);
    END IF;
    -- The same vacuum settings as operations' (above), for the same reason.
    IF NOT coalesce((SELECT reloptions FROM pg_class WHERE oid = 'apalis.jobs'::regclass)
                    @> '{autovacuum_vacuum_scale_factor=0.01,vacuum_index_cleanup=on}', false) THEN
        ALTER TABLE apalis.jobs SET (autovacuum_vacuum_scale_factor = 0.01,
                                     autovacuum_vacuum_threshold = 1000,
                                     vacuum_index_cleanup = on);
    END IF;
END;
$$;

COMMENT ON FUNCTION queue_tuning() IS 'Keeps the cost of apalis'' acknowledgement and takeover, of our count and purge of ended jobs, and of the dead rows between vacuums, flat as apalis.jobs grows; idempotent, run after every migration (migrations/20261205000006_queue_cost_flat.sql, 20261205000007_ended_counts.sql, 20261205000008_one_session_one_index.sql).';

SELECT queue_tuning();
