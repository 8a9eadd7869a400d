-- Each tenant's API traffic a minute, every server's summed (each adds what it counted since its
-- last flush): requests, 5xx answers, requests refused at the API-call budget, and the response
-- times in the buckets of the servers' histogram (l0 ≤ 5 ms … l10 ≤ 10 s, l11 above). Kept an
-- hour: the usage summary, the "heaviest tenants" ranking and the bounded per-tenant series of
-- /metrics read it.
CREATE TABLE tenant_traffic (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    minute BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    throttled BIGINT NOT NULL,
    l0 BIGINT NOT NULL, l1 BIGINT NOT NULL, l2 BIGINT NOT NULL, l3 BIGINT NOT NULL,
    l4 BIGINT NOT NULL, l5 BIGINT NOT NULL, l6 BIGINT NOT NULL, l7 BIGINT NOT NULL,
    l8 BIGINT NOT NULL, l9 BIGINT NOT NULL, l10 BIGINT NOT NULL, l11 BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, minute)
);
CREATE INDEX tenant_traffic_minute ON tenant_traffic (minute);
