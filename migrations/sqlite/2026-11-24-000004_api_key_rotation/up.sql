-- API keys: an optional rate limit per key, and the key that replaced a rotated one (the old key
-- keeps working until its expiry, set to the end of the grace period).
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute BIGINT;
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
