//! The bootstrap administrator: the `admin` user of the portal, its argon2id password
//! (set from the CLI, the environment or generated at the first start) and its password login.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde_json::json;

use super::{BOOTSTRAP_ADMIN, Principal, Role, random_string};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::store;
use crate::store::models::AdminUserRow;
use crate::transaction;

// ---------------------------------------------------------------------------------------------
// Bootstrap administrator

/// Checks the rules an administrator password must follow.
pub fn check_password(password: &str) -> Result<(), FieldError> {
    if password.chars().count() < 12 {
        return Err(FieldError::new(
            "password",
            "length",
            "must be at least 12 characters long",
        ));
    }
    if password.len() > 1024 {
        return Err(FieldError::new(
            "password",
            "length",
            "must be at most 1024 bytes",
        ));
    }
    Ok(())
}

fn hash_password(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing a password: {e}")))
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Sets the bootstrap administrator's password (argon2id), audited.
pub async fn set_admin_password(ctx: &Context, actor: &Actor, password: &str) -> AppResult<()> {
    check_password(password).map_err(|e| AppError::Validation(vec![e]))?;
    let hash = hash_password(password)?;
    let now = clock::now();
    transaction!(ctx.db, |tx| {
        store::admin::upsert_admin(
            tx,
            &AdminUserRow {
                username: BOOTSTRAP_ADMIN.into(),
                password_hash: hash,
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        audit::record(
            tx,
            actor,
            AuditEvent::platform("admin.password_set", json!({ "username": BOOTSTRAP_ADMIN })),
        )
        .await?;
        Ok(())
    })
}

/// What happened to the bootstrap administrator at start.
#[derive(Debug)]
pub enum BootstrapAdmin {
    /// A password already existed and none was configured.
    Existing,
    /// The configured password was applied.
    FromConfig,
    /// First start without a configured password: one was generated into this file.
    Generated(std::path::PathBuf),
}

/// Applies `bootstrap_admin_password` when configured; on a first start without one, generates a
/// password into `<data_dir>/initial-admin-password` (mode 0600) so that the operator can log in.
pub async fn ensure_bootstrap_admin(ctx: &Context) -> AppResult<BootstrapAdmin> {
    let existing = {
        let mut conn = ctx.db.conn().await?;
        store::admin::find_admin(&mut conn, BOOTSTRAP_ADMIN).await?
    };
    if let Some(password) = &ctx.config.bootstrap_admin_password {
        let unchanged = existing
            .as_ref()
            .is_some_and(|row| password_matches(password, &row.password_hash));
        if !unchanged {
            set_admin_password(ctx, &Actor::system(), password)
                .await
                .map_err(|err| {
                    AppError::internal(anyhow::anyhow!("TENANTRY_BOOTSTRAP_ADMIN_PASSWORD: {err}"))
                })?;
        }
        return Ok(BootstrapAdmin::FromConfig);
    }
    if existing.is_some() {
        return Ok(BootstrapAdmin::Existing);
    }
    let password = random_string(24);
    let path = ctx.config.data_dir.join("initial-admin-password");
    std::fs::create_dir_all(&ctx.config.data_dir).map_err(AppError::internal)?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(AppError::internal)?;
        writeln!(file, "{password}").map_err(AppError::internal)?;
    }
    set_admin_password(ctx, &Actor::system(), &password).await?;
    Ok(BootstrapAdmin::Generated(path))
}

/// How a password login went.
#[derive(Debug)]
pub enum PasswordLogin {
    Accepted(Principal),
    /// Wrong user name or password; `user` is the name when such a user exists (what a log may
    /// name: an unknown name may be a password typed into the wrong box).
    Refused {
        user: Option<String>,
    },
    /// Too many failed logins from this address or for this user name: refused for this long
    /// without checking the password.
    Limited(std::time::Duration),
    /// Every password check is busy (`auth.max_concurrent_password_checks`): try again.
    Busy,
}

/// Logs in the portal's administrator with a password, within the failure budgets (per source
/// address and per user name; a spent budget refuses without checking the password) and the
/// cap on password checks running at once — each is an argon2 hash, 19 MiB and tens of
/// milliseconds of CPU, so a flood of guesses would otherwise take the server's memory and CPU.
pub async fn password_login(
    ctx: &Context,
    username: &str,
    password: &str,
    address: Option<&str>,
) -> AppResult<PasswordLogin> {
    use crate::throttle::{Credential, Refusal};
    // The budget of a user name: its first 64 characters (a limiter key per form is bounded).
    let subject: String = username.chars().take(64).collect();
    let refusal = |refused: Refusal| match refused {
        Refusal::Unavailable(detail) => AppError::Unavailable(detail),
        Refusal::Spent { wait, .. } => {
            ctx.metrics
                .refusals
                .count(crate::metrics::Throttle::AbuseBlock);
            AppError::RateLimited {
                what: "too many failed logins".into(),
                retry_after_secs: wait.as_secs().max(1),
            }
        }
    };
    if let Some(wait) = ctx
        .limits
        .blocked(Credential::Password, Some(&subject), address)
        .await
        .map_err(refusal)?
    {
        return Ok(PasswordLogin::Limited(wait));
    }
    let Ok(_permit) = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        ctx.limits.auth.password_checks.acquire(),
    )
    .await
    else {
        return Ok(PasswordLogin::Busy);
    };
    let row = {
        let mut conn = ctx.db.conn().await?;
        store::admin::find_admin(&mut conn, username).await?
    };
    let hash = row
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| {
            // A fixed, valid hash of a random password, so an unknown user costs as much as a known one.
            static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            DUMMY
                .get_or_init(|| hash_password(&random_string(24)).unwrap_or_default())
                .clone()
        });
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || password_matches(&password, &hash))
        .await
        .map_err(AppError::internal)?;
    if ok && row.is_some() {
        return Ok(PasswordLogin::Accepted(Principal {
            tenant: None,
            key: None,
            name: username.to_owned(),
            role: Role::PlatformAdmin,
        }));
    }
    // The attempt that spends a budget is answered as limited.
    if let Some(wait) = ctx
        .limits
        .failed(Credential::Password, Some(&subject), address)
        .await
        .map_err(refusal)?
    {
        return Ok(PasswordLogin::Limited(wait));
    }
    Ok(PasswordLogin::Refused {
        user: row.map(|r| r.username),
    })
}
