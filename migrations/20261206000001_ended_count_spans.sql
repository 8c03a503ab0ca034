-- The count of ended work (ended_counts, migration 20261205000007) recounted every
-- ended job and finished operation each time: an index-only scan of millions of
-- entries on a busy week, 4-14 s on one core every 2-3 minutes in the soak's third
-- hour (BENCHMARKS.md, "Soak"), a spike that every other statement felt.
--
-- Now it is kept by spans of ended time (10 minutes, aligned on the epoch), and each
-- pass recounts only the spans that can have changed (shared::db::ended_counts):
--   - the recent ones, where work is ending now;
--   - the oldest stored, where retention deletes (forgotten once it is empty);
--   - one more, in turn, so that a row that ended late into an older span (a
--     transaction open longer than the recent window) is counted within one turn.
-- The total is the sum of the spans, written to ended_counts as before, so every
-- process (and a replica of the version before, which recounts everything) reads one
-- row by its key.
CREATE TABLE ended_count_spans (
    -- 'job': a job of our queues that apalis will not run again; 'operation': a
    -- finished operation.
    subject text NOT NULL CHECK (subject IN ('job', 'operation')),
    -- The start of the span: date_bin of the ended time (a job's
    -- coalesce(done_at, lock_at, run_at), an operation's updated_at).
    span_start timestamptz NOT NULL,
    -- The job's queue; '' for an operation.
    kind text NOT NULL,
    -- apalis' status (Done, Failed, Killed) or the operation's (completed, failed).
    status text NOT NULL,
    count bigint NOT NULL CHECK (count > 0),
    PRIMARY KEY (subject, span_start, kind, status)
);
COMMENT ON TABLE ended_count_spans IS 'Ended jobs and finished operations by 10-minute span of ended time; ended_counts holds their sum (shared::db::ended_counts).';

-- Whether the spans have been counted once (the first pass of this version counts every
-- span, once), and where each subject's turn of recounting older spans has reached.
ALTER TABLE ended_counts
    ADD COLUMN spans_filled boolean NOT NULL DEFAULT false,
    ADD COLUMN jobs_checked_to timestamptz,
    ADD COLUMN operations_checked_to timestamptz;
