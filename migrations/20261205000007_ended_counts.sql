-- The gauges of ended work (question_jobs{state="done"|"failed"}, jobs{...},
-- operations{status="completed"|"failed"}) count rows that retention keeps for days:
-- millions on a busy week (7 days of jobs, 30 of operations). Counted by every
-- process every 3 s, they were the soak's largest cost (BENCHMARKS.md, "Soak"):
-- 4.4 s of PostgreSQL time a refresh on 5.5 M jobs, in each process.
--
-- Now the gauges count the work in play (waiting, claimed, running, unfinished)
-- through the partial indexes that hold only it, every 3 s; the ended rows are counted
-- by one replica at a time, no more often than every 10 s and never more than 5 % of
-- the time (shared::db::ended_counts), into this one row, which every process reads.
CREATE TABLE ended_counts (
    -- One row: the last count.
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- [{"job_type": ..., "status": "Done" | "Failed" | "Killed", "count": n}]: jobs of
    -- our queues that apalis will not run again.
    jobs jsonb NOT NULL,
    -- [{"status": "completed" | "failed", "count": n}]
    operations jsonb NOT NULL,
    counted_at timestamptz NOT NULL,
    -- How long the count took: the next one waits 20 times as long (at least 10 s).
    took_ms double precision NOT NULL
);
COMMENT ON TABLE ended_counts IS 'The last count of ended jobs and finished operations, for the gauges; recounted by one replica at a time (shared::db::ended_counts).';

-- What counts and deletes the ended work reads only it, through indexes that hold only
-- it: each gets one entry when a row ends (its update is not HOT anyway: the status
-- is in the predicates of apalis' indexes).
--
-- Finished operations by when they last changed: the purge takes its 1,000 oldest by
-- a range of this index (0.03 ms when none is due), where it scanned the table (7.6 s
-- on 5.5 M operations at every pass, to find nothing).
CREATE INDEX operations_finished_idx ON operations (updated_at)
    WHERE status IN ('completed', 'failed');

-- Ended jobs of apalis' table by when they ended, with their queue and status: the
-- purge takes its oldest by a range of it (11 ms a batch of 1,000, where each batch
-- scanned the table past the dead rows of the ones before), and the count reads it
-- alone (an index-only scan of 310 MB, 1.8 s, instead of the 4 GB table, 8 s cold, on
-- 5.5 M jobs). On apalis' table, so in queue_tuning(), which holds whichever migrator
-- runs first. Built without CONCURRENTLY (a function runs in a transaction): apalis'
-- writes wait for the build, 4 s for this index and the one above on 5.5 M rows each
-- here. To avoid even that, create it CONCURRENTLY by hand first, with this
-- definition, and the migration finds it there.
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
END;
$$;
COMMENT ON FUNCTION queue_tuning() IS 'Keeps the cost of apalis'' acknowledgement and takeover, and of our count and purge of ended jobs, flat as apalis.jobs grows; idempotent, run after every migration (migrations/20261205000006_queue_cost_flat.sql, 20261205000007_ended_counts.sql).';

SELECT queue_tuning();
