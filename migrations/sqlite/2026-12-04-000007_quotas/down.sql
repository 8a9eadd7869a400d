DROP TABLE quota_policy_choices;
DROP TABLE quota_overrides;
DROP TABLE tenant_users;
DROP TABLE usage_events;
DROP TABLE usage_counters;
