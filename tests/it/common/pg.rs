//! The `postgres` plugin's grant in tests: a role on the test server with CREATEROLE and
//! CREATEDB — not a superuser — as the docs ask of an operator.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tenantry::audit::Actor;
use tenantry::context::Context;
use tenantry::plugin_registry::{self as registry, Capability};

use super::postgres_admin_url;

/// Runs `statement` as the test server's administrator.
pub async fn admin(statement: &str) {
    let mut conn = AsyncPgConnection::establish(&postgres_admin_url())
        .await
        .unwrap();
    conn.batch_execute(statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// The URL of the test server as `user` (with `password`), to `database`.
pub fn url_as(user: &str, password: Option<&str>, database: &str) -> String {
    let mut url = url::Url::parse(&postgres_admin_url()).unwrap();
    url.set_username(user).unwrap();
    url.set_password(password).unwrap();
    url.set_path(database);
    url.to_string()
}

/// A new server role named `<prefix>_<random>`; drop it with [`drop_role`].
pub async fn server_role(prefix: &str) -> String {
    let role = format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    admin(&format!(
        "CREATE ROLE {role} LOGIN CREATEROLE CREATEDB NOSUPERUSER"
    ))
    .await;
    role
}

/// Grants the `postgres` plugin the test server as `role`, and enables it.
pub async fn grant_postgres(ctx: &Context, role: &str) {
    grant_postgres_on(ctx, role, "postgres").await
}

/// Grants the `postgres` plugin the test server as `role` on `database`, and enables it.
pub async fn grant_postgres_on(ctx: &Context, role: &str, database: &str) {
    let actor = Actor::system();
    registry::grant(
        ctx,
        &actor,
        "postgres",
        Capability::Database {
            alias: "server".into(),
            url: url_as(role, None, database),
        },
    )
    .await
    .expect("grant the server");
    registry::set_enabled(ctx, &actor, "postgres", true, None)
        .await
        .expect("enable postgres");
}

/// Drops `role` (and nothing else: what it made is dropped first by the caller).
pub async fn drop_role(role: &str) {
    admin(&format!("DROP ROLE IF EXISTS {role}")).await;
}
