DROP INDEX audit_log_tenant_action;
