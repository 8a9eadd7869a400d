DROP TABLE tenant_requests;
