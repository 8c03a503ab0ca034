-- The operator's switch over intake (docs/DESIGN.md, "Pausing intake"): while it is
-- paused, workers claim no new job and finish those they hold, operations stay
-- pending, the api tells clients to poll less often, and KEDA asks for no replicas.
-- One row; the queue board flips it (a POST with a CSRF token, behind OPS_TOKEN), and
-- every action on the board is written to ops_audit.
CREATE TABLE intake (
    singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT intake_one_row CHECK (singleton),
    paused boolean NOT NULL DEFAULT false,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO intake DEFAULT VALUES;
COMMENT ON TABLE intake IS 'The one switch over intake: paused stops every worker claiming new jobs (read at each heartbeat).';

-- What each worker last applied, beside the rest of its state at its last beat (one
-- table of ours for what a heartbeat publishes).
ALTER TABLE worker_state ADD COLUMN paused boolean NOT NULL DEFAULT false;

-- Every operator action taken on the board: what, when, and from which address.
CREATE TABLE ops_audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    action text NOT NULL,
    address text NOT NULL,
    detail text NOT NULL DEFAULT ''
);
COMMENT ON TABLE ops_audit IS 'Operator actions on the queue board (pause, resume), oldest first. Kept for good: a few rows per incident, and an audit trail that retention shortened would not be one.';
