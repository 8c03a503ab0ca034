-- The worker's commit transaction (worker/src/job.rs `commit`), statement for
-- statement: lock the session, insert the question, count it, complete the operation
-- (whose trigger sends the NOTIFY). Each client completes its own operations in turn:
-- client c takes c, c + clients, c + 2 × clients, … (pgbench -D clients=N -D k=0).
\set k :k + 1
\set idx :client_id + :k * :clients
\set s :idx % 1000
BEGIN;
SELECT id, user_id, job_posting_id, status, current_question_number, created_at, updated_at
FROM interview_sessions WHERE id = md5('s' || :s)::uuid FOR UPDATE;
INSERT INTO session_messages (id, session_id, message_type, content, question_type, metadata, operation_id)
VALUES (gen_random_uuid(), md5('s' || :s)::uuid, 'question',
        'Walk me through how you would make a job queue survive a crashed worker.', 'technical',
        '{"question_number": 1, "model": "bench-model", "prompt_version": "v1", "attempts": 1, "latency_ms": 0, "usage": {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330}}',
        md5('op' || :idx)::uuid)
ON CONFLICT ON CONSTRAINT session_messages_operation_id_key DO NOTHING
RETURNING id, session_id, message_type, content, question_type, metadata, created_at;
UPDATE interview_sessions
SET current_question_number = current_question_number + 1, updated_at = now()
WHERE id = md5('s' || :s)::uuid
RETURNING current_question_number;
UPDATE operations
SET status = 'completed',
    result = '{"question_text": "Walk me through how you would make a job queue survive a crashed worker.", "question_type": "technical", "message_id": "00000000-0000-0000-0000-000000000000", "question_number": 1}',
    error_message = NULL, updated_at = now()
WHERE id = md5('op' || :idx)::uuid AND status = 'processing';
END;
