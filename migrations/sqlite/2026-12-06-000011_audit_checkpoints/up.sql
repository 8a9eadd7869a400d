-- Where the audit chain was last verified whole: the next verification starts after the newest
-- checkpoint instead of at the first record.
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL,
    verified_at TIMESTAMP NOT NULL
);
