-- The whole interview, part one (docs/DESIGN.md, "Data"): a session may have a set
-- length, an answer may say which question it answers, and a user's job postings are
-- listed newest first.
--
-- Both columns are new and NULL for every existing row, so neither rewrites a table, and
-- the previous release, which names its columns, reads and writes as before beside it.

ALTER TABLE interview_sessions ADD COLUMN question_limit integer
    CONSTRAINT interview_sessions_question_limit_check CHECK (question_limit BETWEEN 1 AND 50);
COMMENT ON COLUMN interview_sessions.question_limit IS 'Questions the interview asks at most (1-50); NULL: no limit. Generated questions plus unfinished question operations count against it.';

-- SET NULL, not CASCADE: an answer is the candidate's, and outlives anything but its
-- session (whose deletion takes every message anyway).
ALTER TABLE session_messages ADD COLUMN question_id uuid
    REFERENCES session_messages (id) ON DELETE SET NULL;
ALTER TABLE session_messages ADD CONSTRAINT session_messages_question_id_answers_only
    CHECK (question_id IS NULL OR message_type = 'answer');
-- A question is answered at most once: the api maps this index to 409 ALREADY_ANSWERED.
CREATE UNIQUE INDEX session_messages_question_id_key ON session_messages (question_id);
COMMENT ON COLUMN session_messages.question_id IS 'For answers: the question (a message of the same session) this answers; NULL when the client did not say, and for every other message.';

-- GET /job-postings pages a user's postings newest first; this index serves that order
-- and every lookup by user the old one served.
CREATE INDEX job_postings_user_id_created_at_idx ON job_postings (user_id, created_at);
DROP INDEX job_postings_user_id_idx;
