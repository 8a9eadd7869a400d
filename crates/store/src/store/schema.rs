//! Diesel table definitions, one set for both backends (the schema is portable on purpose).

diesel::table! {
    tenants (id) {
        id -> Text,
        slug -> Text,
        name -> Text,
        tier -> Text,
        status -> Text,
        status_reason -> Nullable<Text>,
        status_changed_at -> Timestamp,
        trial_ends_at -> Nullable<Timestamp>,
        contact -> Text,
        metadata -> Text,
        oauth_issuer -> Nullable<Text>,
        client_id -> Nullable<Text>,
        client_secret -> Nullable<Text>,
        client_secret_fp -> Nullable<Text>,
        client_secret_previous -> Nullable<Text>,
        client_secret_previous_fp -> Nullable<Text>,
        scopes -> Text,
        db_uri -> Nullable<Text>,
        db_uri_fp -> Nullable<Text>,
        default_schema -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
        role_mapping -> Nullable<Text>,
    }
}

diesel::table! {
    tenant_status_history (id) {
        id -> Text,
        tenant_id -> Text,
        from_status -> Nullable<Text>,
        to_status -> Text,
        reason -> Text,
        actor -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    audit_log (seq) {
        seq -> BigInt,
        at -> Timestamp,
        actor -> Text,
        tenant_id -> Nullable<Text>,
        tenant_slug -> Nullable<Text>,
        action -> Text,
        details -> Text,
        source_ip -> Nullable<Text>,
        request_id -> Nullable<Text>,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    audit_head (id) {
        id -> BigInt,
        seq -> BigInt,
        hash -> Text,
    }
}

diesel::table! {
    audit_checkpoints (seq) {
        seq -> BigInt,
        hash -> Text,
        verified_at -> Timestamp,
    }
}

diesel::table! {
    admin_users (username) {
        username -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        tenant_id -> Nullable<Text>,
        name -> Text,
        prefix -> Text,
        secret_hash -> Text,
        role -> Text,
        created_by -> Text,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        rate_limit_per_minute -> Nullable<BigInt>,
        replaced_by -> Nullable<Text>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        principal -> Text,
        role -> Text,
        tenant_id -> Nullable<Text>,
        csrf_token -> Text,
        source_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
        expires_at -> Timestamp,
        handle -> Nullable<Text>,
        auth_method -> Nullable<Text>,
        subject -> Nullable<Text>,
        email -> Nullable<Text>,
        display_name -> Nullable<Text>,
        issuer -> Nullable<Text>,
        id_token -> Nullable<Text>,
    }
}

diesel::table! {
    login_attempts (state_hash) {
        state_hash -> Text,
        tenant_id -> Text,
        issuer -> Text,
        client_id -> Text,
        browser_hash -> Text,
        nonce -> Text,
        pkce_verifier -> Text,
        redirect_uri -> Text,
        next_path -> Nullable<Text>,
        source_ip -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    sso_setup_links (id) {
        id -> Text,
        tenant_id -> Text,
        token_hash -> Text,
        created_by -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        used_by -> Nullable<Text>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(tenant_status_history -> tenants (tenant_id));
diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(sessions -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(api_keys, tenants);
diesel::allow_tables_to_appear_in_same_query!(sessions, tenants);
diesel::allow_tables_to_appear_in_same_query!(tenants, tenant_status_history, audit_log);

diesel::table! {
    plugins (name) {
        name -> Text,
        version -> Text,
        world -> Text,
        wit_version -> Text,
        sha256 -> Text,
        manifest -> Text,
        component -> Nullable<Binary>,
        builtin -> Bool,
        enabled -> Bool,
        deadline_ms -> Nullable<BigInt>,
        installed_by -> Text,
        installed_at -> Timestamp,
        updated_at -> Timestamp,
        revision -> BigInt,
    }
}

diesel::table! {
    plugin_call_stats (plugin) {
        plugin -> Text,
        calls -> BigInt,
        failures -> BigInt,
        total_us -> BigInt,
        max_us -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    plugin_config (plugin, key) {
        plugin -> Text,
        key -> Text,
        value -> Text,
        set_by -> Text,
        set_at -> Timestamp,
    }
}

diesel::table! {
    plugin_grants (plugin, kind, name) {
        plugin -> Text,
        kind -> Text,
        name -> Text,
        sealed_value -> Nullable<Text>,
        granted_by -> Text,
        granted_at -> Timestamp,
    }
}

diesel::table! {
    plugin_state (plugin, tenant_id, key) {
        plugin -> Text,
        tenant_id -> Text,
        key -> Text,
        value -> Binary,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    templates (name) {
        name -> Text,
        kind -> Text,
        format -> Text,
        description -> Text,
        latest_version -> BigInt,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    template_versions (template, version) {
        template -> Text,
        version -> BigInt,
        body -> Text,
        placeholders -> Text,
        tags -> Text,
        created_by -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(template_versions -> templates (template));
diesel::allow_tables_to_appear_in_same_query!(templates, template_versions);

diesel::table! {
    provisioning_runs (id) {
        id -> Text,
        kind -> Text,
        tenant_id -> Text,
        tenant_slug -> Text,
        tenant -> Text,
        status -> Text,
        backends -> Text,
        error -> Nullable<Text>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        executions -> BigInt,
        created_by -> Text,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    provisioning_steps (run_id, seq) {
        run_id -> Text,
        seq -> BigInt,
        plugin -> Text,
        step_id -> Text,
        action -> Text,
        description -> Text,
        input -> Text,
        state -> Text,
        attempts -> BigInt,
        output -> Nullable<Text>,
        manual_follow_up -> Nullable<Text>,
        error -> Nullable<Text>,
        log -> Text,
        next_attempt_at -> Nullable<Timestamp>,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    idempotency_keys (key) {
        key -> Text,
        fingerprint -> Text,
        run_id -> Text,
        response -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    tenant_resources (tenant_id, plugin, step_id) {
        tenant_id -> Text,
        plugin -> Text,
        step_id -> Text,
        seq -> BigInt,
        run_id -> Text,
        description -> Text,
        input -> Text,
        output -> Text,
        template -> Nullable<Text>,
        template_version -> Nullable<BigInt>,
        fingerprint -> Nullable<Text>,
        applied_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(provisioning_runs, provisioning_steps);

diesel::table! {
    usage_counters (tenant_id, metric, period) {
        tenant_id -> Text,
        metric -> Text,
        period -> Text,
        value -> BigInt,
        measured_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// SQLite only: `PRAGMA data_version` as a table-valued function, so that the statement
    /// asking it is prepared once and reused.
    pragma_data_version (data_version) {
        data_version -> BigInt,
    }
}

diesel::table! {
    /// SQLite only: the changes to cached rows, written by triggers, read by the server.
    cache_changes (seq) {
        seq -> BigInt,
        subject -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    usage_events (tenant_id, event_id) {
        tenant_id -> Text,
        event_id -> Text,
        metric -> Text,
        period -> Text,
        amount -> BigInt,
        received_at -> Timestamp,
    }
}

diesel::table! {
    quota_overrides (tenant_id, metric) {
        tenant_id -> Text,
        metric -> Text,
        limit_value -> Nullable<BigInt>,
        hard -> Bool,
        updated_by -> Text,
        updated_at -> Timestamp,
        reason -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    tenant_users (tenant_id, issuer, subject) {
        tenant_id -> Text,
        issuer -> Text,
        subject -> Text,
        first_seen_at -> Timestamp,
        last_seen_at -> Timestamp,
    }
}

diesel::table! {
    quota_policy_choices (scope) {
        scope -> Text,
        policy -> Text,
        chosen_by -> Text,
        chosen_at -> Timestamp,
    }
}

diesel::table! {
    alerts (id) {
        id -> Text,
        tenant_id -> Text,
        kind -> Text,
        subject -> Text,
        period -> Text,
        threshold -> Text,
        severity -> Text,
        status -> Text,
        value -> Double,
        raised_value -> Double,
        message -> Text,
        times_raised -> BigInt,
        raised_at -> Timestamp,
        updated_at -> Timestamp,
        resolved_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Text,
        url -> Text,
        secret -> Text,
        events -> Text,
        tenant_id -> Nullable<Text>,
        description -> Text,
        enabled -> Bool,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Text,
        webhook_id -> Text,
        event_type -> Text,
        tenant_id -> Nullable<Text>,
        payload -> Text,
        status -> Text,
        attempts -> BigInt,
        next_attempt_at -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        last_attempt_at -> Nullable<Timestamp>,
        last_status_code -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(alerts -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(alerts, tenants);
diesel::joinable!(webhook_deliveries -> webhooks (webhook_id));
diesel::allow_tables_to_appear_in_same_query!(webhook_deliveries, webhooks);

diesel::table! {
    scheduled_jobs (name) {
        name -> Text,
        interval_seconds -> BigInt,
        next_run_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        runs -> BigInt,
        failures -> BigInt,
        last_started_at -> Nullable<Timestamp>,
        last_finished_at -> Nullable<Timestamp>,
        last_duration_ms -> Nullable<BigInt>,
        last_server -> Nullable<Text>,
        last_outcome -> Nullable<Text>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    tenant_requests (tenant_id) {
        tenant_id -> Text,
        request -> Text,
        recorded_at -> Timestamp,
        database_key -> Nullable<Text>,
    }
}

diesel::table! {
    provisioning_run_totals (kind, outcome) {
        kind -> Text,
        outcome -> Text,
        runs -> BigInt,
        seconds -> Double,
    }
}

diesel::table! {
    tenant_database_probes (tenant_id) {
        tenant_id -> Text,
        status -> Text,
        latency_ms -> Nullable<Double>,
        recent_ms -> Text,
        detail -> Nullable<Text>,
        failing_since -> Nullable<Timestamp>,
        checked_at -> Timestamp,
    }
}

diesel::joinable!(tenant_database_probes -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(tenants, tenant_database_probes, tenant_requests);

diesel::table! {
    tenant_traffic (tenant_id, minute) {
        tenant_id -> Text,
        minute -> BigInt,
        requests -> BigInt,
        errors -> BigInt,
        throttled -> BigInt,
        l0 -> BigInt,
        l1 -> BigInt,
        l2 -> BigInt,
        l3 -> BigInt,
        l4 -> BigInt,
        l5 -> BigInt,
        l6 -> BigInt,
        l7 -> BigInt,
        l8 -> BigInt,
        l9 -> BigInt,
        l10 -> BigInt,
        l11 -> BigInt,
    }
}

diesel::joinable!(tenant_traffic -> tenants (tenant_id));
diesel::allow_tables_to_appear_in_same_query!(tenants, tenant_traffic);
