DROP TABLE tenant_database_probes;
