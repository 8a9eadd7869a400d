DROP TABLE plugin_call_stats;
ALTER TABLE plugins DROP COLUMN revision;
