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
