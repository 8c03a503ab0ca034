-- The worker's commit transaction (shared/src/db/attempt.rs `COMPLETE`, run by
-- worker/src/job.rs `commit`), statement for statement: one statement that counts the
-- question (taking the session's row lock), stores it and completes the operation
-- (whose trigger sends the NOTIFY). Each client completes its own operations in turn:
-- client c takes c, c + clients, c + 2 × clients, … (pgbench -D clients=N -D k=0).
-- The statement must stay the worker's own: a unit test of attempt.rs compares the two,
-- with the literals below standing for its parameters.
\set k :k + 1
\set idx :client_id + :k * :clients
\set s :idx % 1000
BEGIN;
WITH counted AS (
    UPDATE interview_sessions
    SET current_question_number = current_question_number + 1, updated_at = now()
    WHERE id = md5('s' || :s)::uuid AND status = 'active'
    RETURNING current_question_number AS question_number
), stored AS (
    INSERT INTO session_messages
        (id, session_id, message_type, content, question_type, metadata, operation_id)
    SELECT gen_random_uuid(), md5('s' || :s)::uuid, 'question',
           'Walk me through how you would make a job queue survive a crashed worker.',
           'technical',
           '{"operation_id": "00000000-0000-0000-0000-000000000000", "model": "bench-model", "prompt_version": "v1", "attempts": 1, "latency_ms": 0, "usage": {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330}}'::jsonb
               || jsonb_build_object('question_number', question_number),
           md5('op' || :idx)::uuid
    FROM counted
    ON CONFLICT ON CONSTRAINT session_messages_operation_id_key DO NOTHING
    RETURNING id, content
), completed AS (
    UPDATE operations
    SET status = 'completed', error_message = NULL, updated_at = now(),
        result = jsonb_build_object(
            'question_text', stored.content,
            'question_type', 'technical',
            'message_id', stored.id,
            'question_number', counted.question_number)
    FROM stored, counted
    WHERE operations.id = md5('op' || :idx)::uuid AND operations.status = 'processing'
    RETURNING operations.id
)
SELECT counted.question_number, stored.id AS message_id,
       EXISTS (SELECT FROM completed) AS completed
FROM counted LEFT JOIN stored ON true;
END;
