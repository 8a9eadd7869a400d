//! The audit log: every mutation writes a record in the same transaction as the change. Records
//! are hash-chained (each hash covers the previous one), so a changed, removed or reordered record
//! shows in [`verify`].

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::clock;
use crate::error::AppResult;
use crate::store::audit::AuditFilter;
use crate::store::models::AuditRow;
use crate::store::{self, Conn, Db};

/// Who did something, from where, in which request: attached to every audit record.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `admin` (bootstrap administrator), `token:<name>` (API key), `cli:<os user>`, `system`.
    pub name: String,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            name: "system".into(),
            source_ip: None,
            request_id: None,
        }
    }

    /// The operator running a CLI command on this machine.
    pub fn cli() -> Self {
        // `$USER` as the shell has it, else the account of the process's uid (a cron job, a
        // container without a login shell).
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| whoami::username().ok())
            .unwrap_or_else(|| "unknown".into());
        Self {
            name: format!("cli:{user}"),
            source_ip: None,
            request_id: None,
        }
    }
}

/// What happened, to which tenant. `details` must never hold a secret.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: &'static str,
    pub tenant_id: Option<String>,
    pub tenant_slug: Option<String>,
    pub details: Value,
}

impl AuditEvent {
    pub fn platform(action: &'static str, details: Value) -> Self {
        Self {
            action,
            tenant_id: None,
            tenant_slug: None,
            details,
        }
    }

    pub fn tenant(action: &'static str, tenant_id: &str, slug: &str, details: Value) -> Self {
        Self {
            action,
            tenant_id: Some(tenant_id.to_owned()),
            tenant_slug: Some(slug.to_owned()),
            details,
        }
    }
}

/// An audit record as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub tenant: Option<String>,
    pub tenant_id: Option<String>,
    pub action: String,
    #[schema(value_type = Object)]
    pub details: Value,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub hash: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> Self {
        AuditRecord {
            seq: row.seq,
            at: clock::to_utc(row.at),
            actor: row.actor,
            tenant: row.tenant_slug,
            tenant_id: row.tenant_id,
            action: row.action,
            details: serde_json::from_str(&row.details).unwrap_or(Value::String(row.details)),
            source_ip: row.source_ip,
            request_id: row.request_id,
            hash: row.hash,
        }
    }
}

/// Appends a record to the chain. Call it inside the transaction of the change it records.
pub async fn record(conn: &mut Conn, actor: &Actor, event: AuditEvent) -> AppResult<i64> {
    let (head_seq, head_hash) = store::audit::lock_head(conn).await?;
    let mut row = AuditRow {
        seq: head_seq + 1,
        at: clock::now(),
        actor: actor.name.clone(),
        tenant_id: event.tenant_id,
        tenant_slug: event.tenant_slug,
        action: event.action.to_owned(),
        details: event.details.to_string(),
        source_ip: actor.source_ip.clone(),
        request_id: actor.request_id.clone(),
        prev_hash: head_hash,
        hash: String::new(),
    };
    row.hash = chain_hash(&row);
    store::audit::append(conn, &row).await?;
    Ok(row.seq)
}

/// The hash of a record: SHA-256 over the previous hash and every field, each length-prefixed so
/// that no two different records hash the same input.
pub fn chain_hash(row: &AuditRow) -> String {
    let mut hasher = Sha256::new();
    let fields: [&str; 10] = [
        &row.prev_hash,
        &row.seq.to_string(),
        &clock::rfc3339(row.at),
        &row.actor,
        row.tenant_id.as_deref().unwrap_or("\u{0}"),
        row.tenant_slug.as_deref().unwrap_or("\u{0}"),
        &row.action,
        &row.details,
        row.source_ip.as_deref().unwrap_or("\u{0}"),
        row.request_id.as_deref().unwrap_or("\u{0}"),
    ];
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    /// Records known good: every record up to the head when `ok`, else those before the first
    /// broken one.
    pub records: i64,
    /// The first record this check hashed: 1 for a full check, else the one after the newest
    /// checkpoint (the chain up to it was verified before, and its last record is checked to be
    /// unchanged).
    pub from_seq: i64,
    /// Records this check hashed.
    pub checked: i64,
    /// The first record found broken, and why.
    pub first_broken_seq: Option<i64>,
    pub problem: Option<String>,
}

/// Records read from the database at a time while verifying.
const VERIFY_PAGE: i64 = 1_000;

/// Checks the chain: sequence, links and hashes of every record up to the head, then the head.
///
/// Incremental unless `full`: a check that found the chain intact leaves a checkpoint (the head's
/// sequence number and hash), and the next check starts after the newest checkpoint, once it has
/// seen that the checkpoint's record is still the one it verified (its hash recomputed and
/// equal). A daily check therefore hashes only the records of the day; a full check hashes
/// them all (a change to an old record that left its stored hash alone is found only then).
pub async fn verify(db: &Db, full: bool) -> AppResult<VerifyReport> {
    let mut conn = db.conn().await?;
    let (head_seq, head_hash) = store::audit::read_head(&mut conn).await?;
    let genesis = || (1, "0".repeat(64));
    let checkpoint = if full {
        None
    } else {
        store::audit::last_checkpoint(&mut conn).await?
    };
    let (from_seq, mut prev_hash) = match &checkpoint {
        None => genesis(),
        Some((seq, hash, at)) => {
            let row = store::audit::record(&mut conn, *seq).await?;
            let what = match &row {
                Some(row) if row.hash == *hash && chain_hash(row) == row.hash => None,
                Some(_) => Some("was changed"),
                None => Some("was removed (records were removed)"),
            };
            match (row, what) {
                (Some(row), None) => (seq + 1, row.hash),
                (_, what) => {
                    return Ok(VerifyReport {
                        ok: false,
                        records: seq - 1,
                        from_seq: *seq,
                        checked: 1,
                        first_broken_seq: Some(*seq),
                        problem: Some(format!(
                            "record {seq} {} after it was verified at {} UTC (checkpoint)",
                            what.unwrap_or("was changed"),
                            at.format("%Y-%m-%d %H:%M:%S")
                        )),
                    });
                }
            }
        }
    };
    let mut expected_seq = from_seq;
    let broken = |seq: i64, problem: String, expected_seq: i64| VerifyReport {
        ok: false,
        records: expected_seq - 1,
        from_seq,
        checked: expected_seq - from_seq + 1,
        first_broken_seq: Some(seq),
        problem: Some(problem),
    };
    // Up to the head as it was read: records appended meanwhile are the next check's.
    'pages: while expected_seq <= head_seq {
        let page = store::audit::chain_page(&mut conn, expected_seq - 1, VERIFY_PAGE).await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            if row.seq > head_seq {
                break 'pages;
            }
            if row.seq != expected_seq {
                return Ok(broken(
                    expected_seq,
                    format!("record {expected_seq} is missing"),
                    expected_seq,
                ));
            }
            if row.prev_hash != prev_hash {
                return Ok(broken(
                    row.seq,
                    format!("record {} does not link to record {}", row.seq, row.seq - 1),
                    expected_seq,
                ));
            }
            if chain_hash(&row) != row.hash {
                return Ok(broken(
                    row.seq,
                    format!("record {} was changed after it was written", row.seq),
                    expected_seq,
                ));
            }
            prev_hash = row.hash;
            expected_seq += 1;
        }
    }
    let records = expected_seq - 1;
    if records != head_seq || prev_hash != head_hash {
        return Ok(VerifyReport {
            checked: expected_seq - from_seq,
            ..broken(
                records + 1,
                format!(
                    "the chain ends at record {records} but its head says {head_seq}: records were removed"
                ),
                expected_seq,
            )
        });
    }
    let newer = checkpoint.as_ref().is_none_or(|(seq, ..)| records > *seq);
    if records > 0 && newer {
        store::audit::add_checkpoint(&mut conn, records, &prev_hash, clock::now()).await?;
    }
    Ok(VerifyReport {
        ok: true,
        records,
        from_seq,
        checked: expected_seq - from_seq,
        first_broken_seq: None,
        problem: None,
    })
}

/// A query of the audit log, as the API and the portal take it.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

/// A page of audit records, newest first; `next_before` continues the listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    pub next_before: Option<i64>,
}

pub async fn list(db: &Db, query: &AuditQuery) -> AppResult<AuditPage> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let mut conn = db.conn().await?;
    let rows = store::audit::list(
        &mut conn,
        &AuditFilter {
            // A tenant is named by its slug or its id.
            tenant_slug: query.tenant.clone().filter(|t| !is_id(t)),
            tenant_id: query
                .tenant
                .as_deref()
                .filter(|t| is_id(t))
                .map(str::to_ascii_lowercase),
            action: query.action.clone(),
            actor: query.actor.clone(),
            since: query.since,
            until: query.until,
            before_seq: query.before,
            limit: limit + 1,
        },
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<AuditRecord> = rows
        .into_iter()
        .take(limit as usize)
        .map(AuditRecord::from)
        .collect();
    let next_before = if more {
        items.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(AuditPage { items, next_before })
}

/// Whether a tenant is named by its id (a hyphenated UUID) rather than its slug.
fn is_id(tenant: &str) -> bool {
    tenant.len() == 36 && uuid::Uuid::try_parse(tenant).is_ok()
}
