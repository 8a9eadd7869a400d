DROP TABLE tenant_traffic;
