DROP TABLE tenant_resources;
DROP TABLE idempotency_keys;
DROP TABLE provisioning_steps;
DROP TABLE provisioning_runs;
DROP TABLE template_versions;
DROP TABLE templates;
