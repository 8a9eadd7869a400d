DROP INDEX audit_log_tenant_id;
