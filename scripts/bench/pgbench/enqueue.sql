-- The api's enqueue transaction (api/src/routes/generate.rs), statement for statement:
-- the owned session under its row lock, the count of its unfinished operations (one at
-- a time per session, and the cap), the operation, and apalis' own job insert (its
-- sink.sql, one row; a job behind an unfinished one would differ only in run_at).
-- Operation ids are time-ordered like the api's UUID v7.
\set s random(1000, 100999)
BEGIN;
SELECT id, user_id, job_posting_id, status, current_question_number, created_at, updated_at
FROM interview_sessions WHERE id = md5('s' || :s)::uuid AND user_id = md5('user')::uuid
FOR UPDATE;
SELECT count(*) FROM operations
WHERE session_id = md5('s' || :s)::uuid AND status IN ('pending', 'processing');
INSERT INTO operations (id, user_id, session_id, operation_type, idempotency_key)
VALUES ((lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
         || substr(md5(random()::text), 1, 20))::uuid,
        md5('user')::uuid, md5('s' || :s)::uuid, 'question_generation', NULL)
ON CONFLICT ON CONSTRAINT operations_user_idempotency_key DO NOTHING
RETURNING id, operation_type, status, result, error_message, created_at, updated_at \gset op_
INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority, metadata, idempotency_key)
SELECT
    unnest(ARRAY[:op_id]::text[]),
    'question_generation'::text,
    unnest(ARRAY[convert_to('{"operation_id":"' || :op_id || '","session_id":"' || md5('s' || :s)::uuid || '"}', 'UTF8')]::bytea[]),
    'Pending',
    0,
    unnest(ARRAY[5]::integer[]),
    to_timestamp(unnest(ARRAY[extract(epoch FROM now())::bigint]::bigint[])),
    unnest(ARRAY[0]::integer[]),
    unnest(ARRAY[''::hstore]::hstore[]),
    unnest(ARRAY[:op_id]::text[]);
END;
