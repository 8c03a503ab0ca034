-- Every operation ends (docs/DESIGN.md, "Every operation ends").
--
-- 1. Operations outlive their session: deleting a session leaves its operations (with
--    session_id NULL), so a poller sees the running one fail instead of a 404. They
--    still go with their user.
-- 2. `started_at` records the first time a worker began an attempt: the reconciler
--    bounds an operation's life from there, not from its creation, because waiting in a
--    backlog is legitimate.
-- 3. Deleting a user is announced on channel `user_deleted`, so an api that keeps a
--    short cache of the users its tokens speak for forgets them at once.

ALTER TABLE operations DROP CONSTRAINT operations_session_id_fkey;
ALTER TABLE operations
    ADD CONSTRAINT operations_session_id_fkey
    FOREIGN KEY (session_id) REFERENCES interview_sessions (id) ON DELETE SET NULL;
COMMENT ON COLUMN operations.session_id IS 'The session a question_generation works on; NULL once the session is deleted (the operation is kept, and fails if it had not finished).';

ALTER TABLE operations ADD COLUMN started_at timestamptz;
COMMENT ON COLUMN operations.started_at IS 'When a worker first began an attempt; the reconciler fails an unfinished operation whose started_at is older than a job''s worst case.';

-- The reconciler looks only at unfinished operations; this keeps that scan small
-- however many finished ones accumulate.
CREATE INDEX operations_unfinished_idx ON operations (created_at)
    WHERE status IN ('pending', 'processing');

CREATE FUNCTION notify_user_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('user_deleted', OLD.id::text);
    RETURN OLD;
END;
$$;

CREATE TRIGGER users_notify_deleted
    AFTER DELETE ON users
    FOR EACH ROW
    EXECUTE FUNCTION notify_user_deleted();
