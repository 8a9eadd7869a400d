DROP TABLE sessions;
DROP TABLE api_keys;
DROP TABLE admin_users;
DROP TABLE audit_head;
DROP TABLE audit_log;
DROP TABLE tenant_status_history;
DROP TABLE tenants;
