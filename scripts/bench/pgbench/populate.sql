-- Data for the pgbench scripts: one user, 1,000 active sessions with 200,000 operations
-- in `processing` (for complete.sql), 100,000 more sessions with none (for enqueue.sql,
-- as the api's enqueue figure spreads its requests over many sessions), with ids the
-- scripts can compute (md5 of a name read as a UUID).
INSERT INTO users (id, email, password_hash)
VALUES (md5('user')::uuid, 'bench@example.com', 'not a hash: nobody logs in here');

INSERT INTO interview_sessions (id, user_id)
SELECT md5('s' || i)::uuid, md5('user')::uuid
FROM generate_series(0, 100999) AS i;

INSERT INTO operations (id, user_id, session_id, operation_type, status, attempts)
SELECT md5('op' || i)::uuid, md5('user')::uuid, md5('s' || (i % 1000))::uuid,
       'question_generation', 'processing', 1
FROM generate_series(0, 199999) AS i;

ANALYZE;
