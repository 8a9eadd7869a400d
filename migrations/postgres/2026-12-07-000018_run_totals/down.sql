DROP TABLE provisioning_run_totals;
