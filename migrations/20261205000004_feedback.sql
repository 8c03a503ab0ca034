-- The whole interview, part two (docs/DESIGN.md, "Feedback"): a second operation type,
-- `feedback_analysis`, which analyses one answer and stores the analysis as a message
-- of type `feedback`. Its jobs go through their own apalis queue of the same name.
--
-- Feedback runs beside a session's one-at-a-time order of questions, not in it: it
-- reads an answer that exists already and changes no counter, and a candidate's next
-- question should not wait behind the analysis of their last answer (nor the other way
-- round). So the release of the next question looks at question operations only.

ALTER TABLE operations DROP CONSTRAINT operations_operation_type_check;
ALTER TABLE operations ADD CONSTRAINT operations_operation_type_check
    CHECK (operation_type IN ('question_generation', 'feedback_analysis'));

-- SET NULL, like session_id: deleting the session takes its messages, and the
-- operation is kept (and fails if it had not finished).
ALTER TABLE operations ADD COLUMN answer_id uuid
    REFERENCES session_messages (id) ON DELETE SET NULL;
ALTER TABLE operations ADD CONSTRAINT operations_answer_id_feedback_only
    CHECK (answer_id IS NULL OR operation_type = 'feedback_analysis');
-- One feedback per answer: the api answers 409 FEEDBACK_EXISTS before this index is
-- reached (it checks under the session's lock); the index is the guarantee. A failed
-- feedback does not count, so that a candidate can ask again after an outage.
CREATE UNIQUE INDEX operations_feedback_answer_key ON operations (answer_id)
    WHERE status <> 'failed';
COMMENT ON COLUMN operations.answer_id IS 'For feedback_analysis: the answer it analyses; NULL once the session (and with it the answer) is deleted.';
COMMENT ON COLUMN operations.result IS 'Set when completed: for question_generation {question_text, question_type, message_id, question_number}; for feedback_analysis {message_id, answer_id, score, strengths, improvements, summary}.';
COMMENT ON COLUMN operations.session_id IS 'The session the operation works on; NULL once the session is deleted (the operation is kept, and fails if it had not finished).';

ALTER TABLE session_messages DROP CONSTRAINT session_messages_message_type_check;
ALTER TABLE session_messages ADD CONSTRAINT session_messages_message_type_check
    CHECK (message_type IN ('question', 'answer', 'feedback'));
COMMENT ON COLUMN session_messages.operation_id IS 'The operation that generated this question or feedback: UNIQUE, so a job delivered twice cannot add a second message.';

-- The session's next question is its oldest unfinished QUESTION operation: an
-- unfinished feedback before it would otherwise be picked, find no question job, and
-- leave the question held for good.
CREATE OR REPLACE FUNCTION release_next_question(session uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    next_operation uuid;
    released text;
BEGIN
    IF session IS NULL OR to_regclass('apalis.jobs') IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM interview_sessions WHERE id = session FOR UPDATE;
    SELECT id INTO next_operation FROM operations
    WHERE session_id = session AND status IN ('pending', 'processing')
      AND operation_type = 'question_generation'
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

-- During a rolling upgrade the previous release's workers run beside this one's. Their
-- reconciler knows one job type: it finds no question job for a feedback operation and
-- would fail it within seconds as "every attempt failed", while this release's workers
-- are about to run it. Every sentence that release writes on its own says "The
-- question could not be generated"; no code of this release writes one on a feedback
-- operation. So such a write is skipped (the row is left as it was), and the feedback
-- waits for a worker that knows it; this release's reconciler fails it if it is stuck.
CREATE FUNCTION keep_feedback_from_question_failures() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END;
$$;

CREATE TRIGGER operations_keep_feedback_from_question_failures
    BEFORE UPDATE OF status ON operations
    FOR EACH ROW
    WHEN (OLD.operation_type = 'feedback_analysis' AND NEW.status = 'failed'
          AND OLD.status IN ('pending', 'processing')
          AND NEW.error_message LIKE 'The question could not be generated%')
    EXECUTE FUNCTION keep_feedback_from_question_failures();
