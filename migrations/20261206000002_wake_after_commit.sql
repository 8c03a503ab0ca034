-- PostgreSQL lets one committing transaction that sent a NOTIFY in at a time, across
-- the whole server: it holds a lock from before its commit record until that record is
-- on disk (PreCommit_Notify in async.c). Such commits cannot share a WAL flush, so
-- every job's two durable commits (the api's enqueue, through apalis' insert trigger,
-- and the worker's result, through operations_notify_finished) queued one behind the
-- other for the disk, and whatever slowed one flush (a vacuum's writes, a checkpoint)
-- stopped them all. Measured (BENCHMARKS.md, "Soak"): 16 clients inserting a row
-- commit 11,340 times a second; with a NOTIFY in the same transaction, 2,626.
--
-- Now a transaction that sets `interviewer.wake_after_commit` (shared::db::wake) keeps
-- both triggers quiet, and its caller sends the same notification after the commit, in
-- a transaction of its own that writes nothing and so waits for no flush. Any other
-- writer (a replica of the version before during a rollout, apalis' own push, an
-- operator's SQL) still notifies in its commit, as before.
CREATE OR REPLACE FUNCTION notify_operation_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('interviewer.wake_after_commit', true) = 'on' THEN
        RETURN NEW;
    END IF;
    PERFORM pg_notify('operation_finished', NEW.id::text);
    RETURN NEW;
END;
$$;

-- apalis' trigger function is replaced in queue_tuning(), which holds whichever
-- migrator runs first, and only while it is the body apalis-postgres 1.0 ships:
-- another body (a later apalis) is left as it is, with a warning, since replacing it
-- could undo a change of apalis'; its wake-ups then stay in the commit (correct, only
-- slower), and the test of the quiet commit fails.
CREATE OR REPLACE FUNCTION queue_tuning() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    notify_body text;
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
    -- The same vacuum settings as operations' (migration 20261205000008).
    IF NOT coalesce((SELECT reloptions FROM pg_class WHERE oid = 'apalis.jobs'::regclass)
                    @> '{autovacuum_vacuum_scale_factor=0.01,vacuum_index_cleanup=on}', false) THEN
        ALTER TABLE apalis.jobs SET (autovacuum_vacuum_scale_factor = 0.01,
                                     autovacuum_vacuum_threshold = 1000,
                                     vacuum_index_cleanup = on);
    END IF;
    -- The insert notification, quiet in a transaction that wakes after its commit.
    SELECT regexp_replace(prosrc, '\s+', ' ', 'g') INTO notify_body
        FROM pg_proc WHERE oid = to_regprocedure('apalis.notify_new_jobs()');
    IF notify_body = ' BEGIN IF NEW.run_at <= now() THEN PERFORM pg_notify( '
                     '''apalis::job::insert'', json_build_object( ''job_type'', NEW.job_type, '
                     '''id'', NEW.id, ''run_at'', NEW.run_at )::text ); END IF; RETURN NEW; END; ' THEN
        EXECUTE $body$
            CREATE OR REPLACE FUNCTION apalis.notify_new_jobs() RETURNS trigger
            LANGUAGE plpgsql AS $fn$
            BEGIN
                -- interviewer: quiet in a transaction that wakes after its commit
                -- (migrations/20261206000002_wake_after_commit.sql).
                IF current_setting('interviewer.wake_after_commit', true) = 'on' THEN
                    RETURN NEW;
                END IF;
                IF NEW.run_at <= now() THEN
                    PERFORM pg_notify(
                        'apalis::job::insert',
                        json_build_object(
                            'job_type', NEW.job_type,
                            'id', NEW.id,
                            'run_at', NEW.run_at
                        )::text
                    );
                END IF;
                RETURN NEW;
            END;
            $fn$
        $body$;
    ELSIF notify_body IS NOT NULL AND notify_body NOT LIKE '%interviewer.wake_after_commit%' THEN
        RAISE WARNING 'apalis.notify_new_jobs() is not the body apalis-postgres 1.0 ships: left as it is, so enqueues notify in their commit (migrations/20261206000002_wake_after_commit.sql)';
    END IF;
END;
$$;

COMMENT ON FUNCTION queue_tuning() IS 'Keeps the cost of apalis'' acknowledgement and takeover, of our count and purge of ended jobs, and of the dead rows between vacuums, flat as apalis.jobs grows, and its insert notification out of the durable commits that wake after commit; idempotent, run after every migration (migrations/20261205000006_queue_cost_flat.sql, 20261205000007_ended_counts.sql, 20261205000008_one_session_one_index.sql, 20261206000002_wake_after_commit.sql).';

SELECT queue_tuning();
