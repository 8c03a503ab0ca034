-- The model provider's limits (docs/DESIGN.md, "The provider's limits").

-- What an operation has cost at the provider while it runs, so that its budget of
-- waiting (the worker's LLM_MAX_WAIT_SECS) holds across attempts and across workers:
-- the model calls made so far, refused ones included, and the time its jobs spent
-- waiting on the provider (a Retry-After, the breaker, the cap). Written at each wait
-- and when an attempt ends without its question; the question's metadata (`attempts`,
-- `waited_ms`) carries the final figures. `attempts` still counts only the calls that
-- no wait explains, the ones LLM_MAX_ATTEMPTS bounds.
ALTER TABLE operations
    ADD COLUMN model_calls integer NOT NULL DEFAULT 0 CHECK (model_calls >= 0),
    ADD COLUMN waited_ms bigint NOT NULL DEFAULT 0 CHECK (waited_ms >= 0);

-- Each worker process as its heartbeat last described it: its build, and its side of
-- the provider's limits. What the queue board shows per worker. The heartbeat rewrites
-- its row every beat; retention deletes it with its worker's row of apalis.workers.
-- (No foreign key to that row: our migrations run before or after apalis' own, in
-- either order.)
CREATE TABLE worker_state (
    worker_id text PRIMARY KEY,
    version text NOT NULL,
    git_commit text NOT NULL,
    -- This process's share of LLM_MAX_IN_FLIGHT; NULL when no cap is set.
    cap_share integer CHECK (cap_share >= 0),
    in_flight integer NOT NULL CHECK (in_flight >= 0),
    breaker_open boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
