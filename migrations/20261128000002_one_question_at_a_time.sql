-- One session's questions are generated one after another, in the order the api
-- accepted them (docs/DESIGN.md, "One question at a time").
--
-- The job of every operation exists from the moment the operation is accepted, but
-- only the session's oldest unfinished operation has a job that can run: the others'
-- are pushed held (run_at at the end of time, which apalis' fetch never reaches). When
-- an operation ends, however it ends (the worker's commit, a failure, the reconciler,
-- an operator's SQL), a trigger releases the job of the session's next one, in the same
-- transaction. Deciding "held or not" at enqueue and releasing at the end both happen
-- under the session's row lock, so neither can miss the other.

-- The api's order: identity values are drawn at insert, which the api does under the
-- session's row lock, so within a session they follow acceptance.
ALTER TABLE operations ADD COLUMN accepted_seq bigint GENERATED ALWAYS AS IDENTITY;
COMMENT ON COLUMN operations.accepted_seq IS 'Order of acceptance: a session''s operations run one after another in this order.';

CREATE INDEX operations_session_unfinished_idx ON operations (session_id, accepted_seq)
    WHERE status IN ('pending', 'processing');

-- When a held job's run_at says "never": 9999-12-31 23:59:59 UTC, the Rust side's
-- shared::jobs::HELD_UNTIL.
CREATE FUNCTION question_job_held_until() RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$ SELECT to_timestamp(253402300799) $$;

-- Lets the job of the session's oldest unfinished operation run, if it is held, and
-- wakes the workers as apalis' own insert trigger would.
CREATE FUNCTION release_next_question(session uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    next_operation uuid;
    released text;
BEGIN
    -- Without the queue's tables (our migrations may run before apalis' own, or alone
    -- in the schema tests) there is no job to release.
    IF session IS NULL OR to_regclass('apalis.jobs') IS NULL THEN
        RETURN;
    END IF;
    -- The api holds this lock from its check to its commit (see above).
    PERFORM 1 FROM interview_sessions WHERE id = session FOR UPDATE;
    SELECT id INTO next_operation FROM operations
    WHERE session_id = session AND status IN ('pending', 'processing')
    ORDER BY accepted_seq
    LIMIT 1;
    IF next_operation IS NULL THEN
        RETURN;
    END IF;
    UPDATE apalis.jobs SET run_at = now()
    WHERE job_type = 'question_generation' AND idempotency_key = next_operation::text
      AND run_at >= question_job_held_until()
    RETURNING id INTO released;
    IF released IS NOT NULL THEN
        PERFORM pg_notify('apalis::job::insert',
            json_build_object('job_type', 'question_generation', 'id', released)::text);
    END IF;
END;
$$;

CREATE FUNCTION release_next_question_on_finish() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM release_next_question(NEW.session_id);
    RETURN NEW;
END;
$$;

CREATE TRIGGER operations_release_next_question
    AFTER UPDATE OF status ON operations
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION release_next_question_on_finish();

-- A deleted session's unfinished operations are kept (session_id becomes NULL) and must
-- still end: their held jobs are released, to fail at once as "no longer exists".
CREATE FUNCTION release_questions_of_deleted_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('apalis.jobs') IS NULL THEN
        RETURN OLD;
    END IF;
    UPDATE apalis.jobs SET run_at = now()
    WHERE job_type = 'question_generation'
      AND run_at >= question_job_held_until()
      AND idempotency_key IN (
          SELECT id::text FROM operations
          WHERE session_id = OLD.id AND status IN ('pending', 'processing'));
    RETURN OLD;
END;
$$;

CREATE TRIGGER interview_sessions_release_questions
    BEFORE DELETE ON interview_sessions
    FOR EACH ROW
    EXECUTE FUNCTION release_questions_of_deleted_session();
