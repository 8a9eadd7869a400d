DROP TABLE quota_overrides;
DROP TABLE usage_events;
DROP TABLE usage_counters;
