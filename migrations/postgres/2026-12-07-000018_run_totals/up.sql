-- How many provisioning runs ended, by kind and outcome, and how long they took in all: written
-- in the transaction that ends each run, by whichever process ran it (a server or the CLI), so
-- that every server's /metrics shows every run.
CREATE TABLE provisioning_run_totals (
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    runs BIGINT NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, outcome)
);
INSERT INTO provisioning_run_totals (kind, outcome, runs, seconds)
SELECT kind, status, COUNT(*),
       COALESCE(SUM(EXTRACT(EPOCH FROM (finished_at - created_at))), 0)
FROM provisioning_runs
WHERE status IN ('succeeded', 'failed') AND finished_at IS NOT NULL
GROUP BY kind, status;
