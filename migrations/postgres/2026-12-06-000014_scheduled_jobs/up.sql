-- The server's scheduled jobs: each runs once per interval across every replica. A server takes
-- a job's lease here to run it (and renews it while it runs); one that dies mid-run loses it
-- when it expires, and the next server takes the job over.
CREATE TABLE scheduled_jobs (
    name TEXT PRIMARY KEY,
    interval_seconds BIGINT NOT NULL,
    next_run_at TIMESTAMP NOT NULL,
    lease_owner TEXT,
    lease_expires_at TIMESTAMP,
    runs BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    last_started_at TIMESTAMP,
    last_finished_at TIMESTAMP,
    last_duration_ms BIGINT,
    last_server TEXT,
    last_outcome TEXT,
    last_error TEXT
);
