//! The `crm` backend plugin: BottleCRM (PyPI `django-crm`). Per tenant, an organization named
//! after the tenant and its admin user (docs/provisioning.md, section "CRM").
//!
//! Steps: `organization` (created by the operator, who becomes its ADMIN) and `admin-user`
//! (the tenant's admin, role ADMIN, in that organization). Lifecycle: `suspend`/`cancel`
//! deactivate every active user of the organization (the operator excepted) and remember who;
//! `reactivate` reactivates exactly those; `purge` removes the users and leaves the
//! organization itself as a manual follow-up — BottleCRM's API cannot delete an organization.
//!
//! Plugin state (per tenant): `organization` (`{"id","name"}`), `deactivated` (the users a
//! suspension or cancellation deactivated), `follow-up/organization` (the organization that
//! a compensation could not delete).

mod api;

use api::{Changed, Crm, Member, Org, Removed, Session};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenantry_plugin_sdk::provisioner::{
    BundlePart, Drift, LifecycleChange, Measurement, Outcome, PluginError, PluginInfo, Provisioner,
    Step, Tenant,
};
use tenantry_plugin_sdk::{log, state};

const STEP_ORGANIZATION: &str = "organization";
const STEP_ADMIN_USER: &str = "admin-user";

const KEY_ORGANIZATION: &str = "organization";
const KEY_DEACTIVATED: &str = "deactivated";
const KEY_FOLLOW_UP: &str = "follow-up/organization";

/// The characters BottleCRM refuses in an organization name.
const FORBIDDEN_IN_NAME: &str = "~!@#$%^&*()+{}\":;'/[]";
/// BottleCRM's organization names are `varchar(100)`.
const MAX_NAME: usize = 100;

struct CrmPlugin;

#[derive(Debug, Serialize, Deserialize)]
struct OrganizationInput {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct AdminUserInput {
    email: String,
    role: String,
    organization: String,
}

/// The organization name of a tenant: its display name without the characters BottleCRM
/// refuses, then ` - <slug>` (slugs are unique, so names are unique across tenants).
pub fn organization_name(name: &str, slug: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if FORBIDDEN_IN_NAME.contains(c) || c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    let suffix = format!(" - {slug}");
    let room = MAX_NAME.saturating_sub(suffix.chars().count());
    let head: String = cleaned.chars().take(room).collect();
    let head = head.trim_end();
    if head.is_empty() {
        slug.chars().take(MAX_NAME).collect()
    } else {
        format!("{head}{suffix}")
    }
}

fn permanent(message: impl Into<String>) -> PluginError {
    PluginError::Permanent(message.into())
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T, PluginError> {
    serde_json::from_str(text).map_err(|e| permanent(format!("{what}: {e}")))
}

fn plausible_email(email: &str) -> bool {
    let mut parts = email.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None)
            if !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
    )
}

fn save(key: &str, value: &impl Serialize) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(value).map_err(|e| permanent(e.to_string()))?;
    state::set(key, &bytes).map_err(|e| PluginError::Permanent(format!("plugin state: {e}")))
}

fn load<T: for<'de> Deserialize<'de>>(key: &str) -> Option<T> {
    state::get(key).and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

fn org_json(org: &Org) -> Value {
    json!({ "id": org.id, "name": org.name })
}

fn remembered_org() -> Option<Org> {
    let value: Value = load(KEY_ORGANIZATION)?;
    Some(Org {
        id: value["id"].as_str()?.to_owned(),
        name: value["name"].as_str().unwrap_or_default().to_owned(),
    })
}

/// The tenant's organization: the remembered one, or else the one named after the tenant.
fn tenant_org(crm: &Crm, tenant: &Tenant) -> Result<Option<Org>, PluginError> {
    let remembered = remembered_org();
    let name = remembered
        .as_ref()
        .map(|o| o.name.clone())
        .unwrap_or_else(|| organization_name(&tenant.name, &tenant.slug));
    crm.find_organization(remembered.as_ref().map(|o| o.id.as_str()), Some(&name))
}

/// The members of the tenant's organization (the operator's own membership aside); none when
/// the organization is gone.
fn tenant_members(crm: &Crm, tenant: &Tenant) -> Result<Vec<Member>, PluginError> {
    let Some(org) = tenant_org(crm, tenant)? else {
        return Ok(Vec::new());
    };
    match crm.session(&org.id)? {
        Some(session) => crm.members(&session),
        None => Ok(Vec::new()),
    }
}

/// Restores the users of an export: a missing one is added with its role, and each gets the
/// active state it had.
fn import_members(tenant: &Tenant, part: &BundlePart) -> Result<Outcome, PluginError> {
    if part.media_type != "application/json" {
        return Err(permanent(format!(
            "the crm plugin imports its own export (application/json), not {}",
            part.media_type
        )));
    }
    let data: Value = serde_json::from_slice(&part.data)
        .map_err(|e| permanent(format!("the bundle part is not JSON: {e}")))?;
    let crm = Crm::from_secrets()?;
    let org = tenant_org(&crm, tenant)?.ok_or_else(|| {
        permanent(format!(
            "tenant {} has no BottleCRM organization: provision it before importing",
            tenant.slug
        ))
    })?;
    let session = organization_session(&crm, &org.name)?;
    let mut added = Vec::new();
    for user in data["users"].as_array().into_iter().flatten() {
        let email = user["email"]
            .as_str()
            .ok_or_else(|| permanent("a user of the bundle part has no email"))?;
        let role = user["role"].as_str().unwrap_or("USER");
        let member = match crm.member(&session, email)? {
            Some(member) => member,
            None => {
                crm.add_member(&session, email, role)?;
                added.push(email.to_owned());
                crm.member(&session, email)?.ok_or_else(|| {
                    PluginError::Transient(format!("user {email} was added but is not listed yet"))
                })?
            }
        };
        let active = user["active"].as_bool().unwrap_or(true);
        if member.active != active {
            crm.set_active(&session, &member, active)?;
        }
    }
    Ok(Outcome::done(
        &json!({ "organization": org.id, "added": added }),
    ))
}

/// The follow-up for an organization that stays behind.
fn organization_follow_up(org: &Org) -> String {
    format!(
        "Delete the BottleCRM organization \"{}\" (id {}) by hand: BottleCRM's API cannot delete an organization. \
         On the BottleCRM server: django-admin shell -c \"from common.models import Org; Org.objects.filter(id='{}').delete()\" \
         (with its DJANGO_SETTINGS_MODULE and database settings). Its users have been removed or deactivated.",
        org.name, org.id, org.id
    )
}

fn apply_organization(crm: &Crm, input: &OrganizationInput) -> Result<Outcome, PluginError> {
    let remembered = remembered_org();
    let existing = crm.find_organization(
        remembered.as_ref().map(|o| o.id.as_str()),
        Some(&input.name),
    )?;
    let (org, created) = match existing {
        Some(org) => (org, false),
        None => (crm.create_organization(&input.name)?, true),
    };
    save(KEY_ORGANIZATION, &org_json(&org))?;
    // In use again (a provisioning retried after a compensation): nothing to delete by hand.
    state::delete(KEY_FOLLOW_UP);
    log::info(&format!(
        "organization \"{}\" ({}) {}",
        org.name,
        org.id,
        if created { "created" } else { "already there" }
    ));
    Ok(Outcome {
        output: json!({ "organization": org_json(&org), "created": created }).to_string(),
        manual_follow_up: None,
    })
}

/// A session in the organization the admin user belongs in.
fn organization_session(crm: &Crm, name: &str) -> Result<Session, PluginError> {
    let remembered = remembered_org();
    let org = crm
        .find_organization(remembered.as_ref().map(|o| o.id.as_str()), Some(name))?
        .ok_or_else(|| {
            permanent(format!(
                "the BottleCRM organization \"{name}\" does not exist (the step `organization` comes first)"
            ))
        })?;
    crm.session(&org.id)?.ok_or_else(|| {
        permanent(format!(
            "the operator cannot act in the BottleCRM organization \"{name}\" ({})",
            org.id
        ))
    })
}

fn apply_admin_user(crm: &Crm, input: &AdminUserInput) -> Result<Outcome, PluginError> {
    let session = organization_session(crm, &input.organization)?;
    let mut created = false;
    let member = match crm.member(&session, &input.email)? {
        Some(member) => member,
        None => {
            crm.add_member(&session, &input.email, &input.role)?;
            created = true;
            crm.member(&session, &input.email)?.ok_or_else(|| {
                PluginError::Transient(format!(
                    "user {} was added to organization {} but is not listed yet",
                    input.email, session.org.id
                ))
            })?
        }
    };
    if !member.active {
        crm.set_active(&session, &member, true)?;
    }
    if !member.role.eq_ignore_ascii_case(&input.role) {
        log::warn(&format!(
            "user {} has the role {} in organization {}, not {}",
            member.email, member.role, session.org.id, input.role
        ));
    }
    log::info(&format!(
        "user {} in organization {} {}",
        member.email,
        session.org.id,
        if created { "created" } else { "already there" }
    ));
    Ok(Outcome {
        output: json!({
            "organization": org_json(&Org { id: session.org.id.clone(), name: input.organization.clone() }),
            "user": { "id": member.user_id, "email": member.email, "role": member.role },
            "created": created,
        })
        .to_string(),
        manual_follow_up: None,
    })
}

/// The organization an applied step's output names.
fn output_org(output: &Value) -> Option<Org> {
    Some(Org {
        id: output["organization"]["id"].as_str()?.to_owned(),
        name: output["organization"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

fn compensate_admin_user(crm: &Crm, step: &Step, outcome: &Outcome) -> Result<(), PluginError> {
    let input: AdminUserInput = parse("the step's input", &step.input)?;
    let output: Value = serde_json::from_str(&outcome.output).unwrap_or(Value::Null);
    let org = match output_org(&output) {
        Some(org) => crm.find_organization(Some(&org.id), Some(&input.organization))?,
        None => crm.find_organization(None, Some(&input.organization))?,
    };
    let Some(org) = org else {
        log::info("the organization is gone: nothing to undo");
        return Ok(());
    };
    let Some(session) = crm.session(&org.id)? else {
        return Ok(());
    };
    let Some(member) = crm.member(&session, &input.email)? else {
        log::info(&format!("user {} is gone already", input.email));
        return Ok(());
    };
    match crm.remove(&session, &member)? {
        Removed::Deleted => log::info(&format!("user {} removed", member.email)),
        Removed::Deactivated => log::info(&format!(
            "user {} deactivated (BottleCRM keeps users with linked records)",
            member.email
        )),
        Removed::Gone => {}
    }
    forget_deactivated(&member.user_id)?;
    Ok(())
}

/// Undoes the organization step: its members deactivated; the organization itself, which the
/// API cannot delete, is the outcome's manual follow-up.
fn compensate_organization(
    crm: &Crm,
    step: &Step,
    outcome: &Outcome,
) -> Result<Outcome, PluginError> {
    let input: OrganizationInput = parse("the step's input", &step.input)?;
    let output: Value = serde_json::from_str(&outcome.output).unwrap_or(Value::Null);
    let known = output_org(&output).or_else(remembered_org);
    let org = crm.find_organization(known.as_ref().map(|o| o.id.as_str()), Some(&input.name))?;
    let Some(org) = org else {
        state::delete(KEY_FOLLOW_UP);
        log::info("the organization is gone: nothing to undo");
        return Ok(Outcome::done(&json!({ "organization": "gone" })));
    };
    // What can be undone: nobody but the operator stays active in it.
    if let Some(session) = crm.session(&org.id)? {
        for member in crm.members(&session)?.into_iter().filter(|m| m.active) {
            crm.set_active(&session, &member, false)?;
            log::info(&format!("user {} deactivated", member.email));
        }
    }
    // What cannot: the outcome's manual follow-up (`transition(purge)` returns it again).
    let follow_up = organization_follow_up(&org);
    state::set(KEY_FOLLOW_UP, follow_up.as_bytes())
        .map_err(|e| PluginError::Permanent(format!("plugin state: {e}")))?;
    Ok(Outcome::with_follow_up(
        &json!({ "organization": org.id, "members": "deactivated" }),
        follow_up,
    ))
}

/// The ids of the users a suspension or cancellation deactivated (ids only: a state value
/// holds at most 64 KiB, about 1,600 ids).
fn deactivated() -> Vec<String> {
    load(KEY_DEACTIVATED).unwrap_or_default()
}

fn forget_deactivated(user_id: &str) -> Result<(), PluginError> {
    let mut list = deactivated();
    let before = list.len();
    list.retain(|id| id != user_id);
    if list.len() != before {
        save(KEY_DEACTIVATED, &list)?;
    }
    Ok(())
}

fn no_organization(change: &str) -> Outcome {
    log::info("the tenant has no BottleCRM organization: nothing to do");
    Outcome {
        output: json!({ "organization": null, "change": change }).to_string(),
        manual_follow_up: None,
    }
}

fn deactivate_all(crm: &Crm, tenant: &Tenant, change: &str) -> Result<Outcome, PluginError> {
    let Some(org) = tenant_org(crm, tenant)? else {
        return Ok(no_organization(change));
    };
    let Some(session) = crm.session(&org.id)? else {
        return Ok(no_organization(change));
    };
    let members = crm.members(&session)?;
    let active: Vec<&Member> = members.iter().filter(|m| m.active).collect();
    // Remembered before any call: a retry after a crash still reactivates them.
    let mut list = deactivated();
    let before = list.len();
    for member in &active {
        if !list.contains(&member.user_id) {
            list.push(member.user_id.clone());
        }
    }
    if list.len() != before {
        save(KEY_DEACTIVATED, &list)?;
    }
    let mut now = Vec::new();
    for member in active {
        if let Changed::Done = crm.set_active(&session, member, false)? {
            now.push(member.email.clone());
        }
    }
    log::info(&format!(
        "{change}: {} user(s) of organization {} deactivated",
        now.len(),
        org.id
    ));
    Ok(Outcome {
        output: json!({
            "organization": org_json(&org),
            "change": change,
            "deactivated": now,
            "inactive": members
                .iter()
                .filter(|m| list.contains(&m.user_id))
                .map(|m| &m.email)
                .collect::<Vec<_>>(),
        })
        .to_string(),
        manual_follow_up: None,
    })
}

fn reactivate(crm: &Crm, tenant: &Tenant) -> Result<Outcome, PluginError> {
    let list = deactivated();
    let Some(org) = tenant_org(crm, tenant)? else {
        return Ok(no_organization("reactivate"));
    };
    let Some(session) = crm.session(&org.id)? else {
        return Ok(no_organization("reactivate"));
    };
    let members = crm.members(&session)?;
    let mut reactivated = Vec::new();
    let mut gone = Vec::new();
    for id in &list {
        match members.iter().find(|m| &m.user_id == id) {
            Some(member) => {
                if !member.active
                    && let Changed::Gone = crm.set_active(&session, member, true)?
                {
                    gone.push(id.clone());
                    continue;
                }
                reactivated.push(member.email.clone());
            }
            // Removed from the organization meanwhile: nothing to give back.
            None => gone.push(id.clone()),
        }
    }
    state::delete(KEY_DEACTIVATED);
    log::info(&format!(
        "reactivate: {} user(s) of organization {} reactivated",
        reactivated.len(),
        org.id
    ));
    Ok(Outcome {
        output: json!({
            "organization": org_json(&org),
            "change": "reactivate",
            "reactivated": reactivated,
            "gone": gone,
        })
        .to_string(),
        manual_follow_up: None,
    })
}

fn purge(crm: &Crm, tenant: &Tenant) -> Result<Outcome, PluginError> {
    let Some(org) = tenant_org(crm, tenant)? else {
        state::delete(KEY_DEACTIVATED);
        state::delete(KEY_FOLLOW_UP);
        return Ok(no_organization("purge"));
    };
    let mut removed = Vec::new();
    let mut kept_inactive = Vec::new();
    if let Some(session) = crm.session(&org.id)? {
        for member in crm.members(&session)? {
            match crm.remove(&session, &member)? {
                Removed::Deleted => removed.push(member.email),
                Removed::Deactivated => kept_inactive.push(member.email),
                Removed::Gone => {}
            }
        }
    }
    state::delete(KEY_DEACTIVATED);
    let follow_up = organization_follow_up(&org);
    state::set(KEY_FOLLOW_UP, follow_up.as_bytes())
        .map_err(|e| PluginError::Permanent(format!("plugin state: {e}")))?;
    Ok(Outcome {
        output: json!({
            "organization": org_json(&org),
            "change": "purge",
            "removed": removed,
            "deactivated": kept_inactive,
            "organization_deleted": false,
        })
        .to_string(),
        manual_follow_up: Some(follow_up),
    })
}

fn observe_step(
    crm: &Crm,
    tenant: &Tenant,
    orgs: &[Org],
    step: &Step,
    outcome: &Outcome,
    drift: &mut Vec<Drift>,
) -> Result<(), PluginError> {
    let output: Value = serde_json::from_str(&outcome.output).unwrap_or(Value::Null);
    match step.id.as_str() {
        STEP_ORGANIZATION => {
            let Some(org) = output_org(&output) else {
                return Ok(());
            };
            let resource = format!("organization {}", org.name);
            match orgs.iter().find(|o| o.id == org.id) {
                None => drift.push(Drift {
                    resource,
                    problem: "missing".into(),
                }),
                Some(now) if !org.name.is_empty() && now.name != org.name => drift.push(Drift {
                    resource,
                    problem: format!("changed: renamed to \"{}\"", now.name),
                }),
                Some(_) => {}
            }
        }
        STEP_ADMIN_USER => {
            let email = output["user"]["email"].as_str().unwrap_or_default();
            let Some(org) = output_org(&output) else {
                return Ok(());
            };
            let resource = format!("admin user {email}");
            let session = if orgs.iter().any(|o| o.id == org.id) {
                crm.session(&org.id)?
            } else {
                None
            };
            let Some(session) = session else {
                drift.push(Drift {
                    resource,
                    problem: "missing".into(),
                });
                return Ok(());
            };
            match crm.member(&session, email)? {
                None => drift.push(Drift {
                    resource,
                    problem: "missing".into(),
                }),
                Some(member) if !member.active => {
                    let expected = matches!(tenant.status.as_str(), "suspended" | "canceled")
                        && deactivated().contains(&member.user_id);
                    if !expected {
                        drift.push(Drift {
                            resource,
                            problem: "changed: inactive".into(),
                        });
                    }
                }
                Some(member) => {
                    if let Some(role) = output["user"]["role"].as_str()
                        && !role.is_empty()
                        && !member.role.eq_ignore_ascii_case(role)
                    {
                        drift.push(Drift {
                            resource,
                            problem: format!("changed: role {}", member.role),
                        });
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

impl Provisioner for CrmPlugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "crm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(tenant: Tenant, request: String) -> Result<Vec<Step>, PluginError> {
        let request: Value = parse("the provisioning request", &request)?;
        let email = request["settings"]["admin_email"]
            .as_str()
            .or_else(|| request["tenant"]["contact"]["email"].as_str())
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                permanent(
                    "the CRM needs an admin: set backends.crm.admin_email or the tenant's contact email",
                )
            })?;
        if !plausible_email(email) {
            return Err(permanent(format!(
                "the CRM admin's email \"{email}\" is not an email address"
            )));
        }
        let name = organization_name(&tenant.name, &tenant.slug);
        Ok(vec![
            Step {
                id: STEP_ORGANIZATION.into(),
                description: format!("BottleCRM organization \"{name}\""),
                input: json!(OrganizationInput { name: name.clone() }).to_string(),
            },
            Step {
                id: STEP_ADMIN_USER.into(),
                description: format!("BottleCRM admin user {email} in \"{name}\""),
                input: json!(AdminUserInput {
                    email: email.to_owned(),
                    role: "ADMIN".into(),
                    organization: name,
                })
                .to_string(),
            },
        ])
    }

    fn apply(_tenant: Tenant, step: Step, _key: String) -> Result<Outcome, PluginError> {
        // Idempotent by lookup: the organization's name derives from the tenant and the user
        // is found by email, so a repeated step finds what an earlier attempt created.
        let crm = Crm::from_secrets()?;
        match step.id.as_str() {
            STEP_ORGANIZATION => apply_organization(&crm, &parse("the step's input", &step.input)?),
            STEP_ADMIN_USER => apply_admin_user(&crm, &parse("the step's input", &step.input)?),
            other => Err(permanent(format!("unknown step `{other}`"))),
        }
    }

    fn compensate(
        _tenant: Tenant,
        step: Step,
        outcome: Outcome,
        _key: String,
    ) -> Result<Outcome, PluginError> {
        let crm = Crm::from_secrets()?;
        match step.id.as_str() {
            STEP_ADMIN_USER => {
                compensate_admin_user(&crm, &step, &outcome)?;
                Ok(Outcome::done(&json!({ "admin_user": "removed" })))
            }
            STEP_ORGANIZATION => compensate_organization(&crm, &step, &outcome),
            _ => Ok(Outcome::done(&json!({}))),
        }
    }

    fn measure(
        tenant: Tenant,
        applied: Vec<(Step, Outcome)>,
    ) -> Result<Vec<Measurement>, PluginError> {
        if applied.is_empty() {
            return Ok(Vec::new());
        }
        let crm = Crm::from_secrets()?;
        let members = tenant_members(&crm, &tenant)?;
        let active = members.iter().filter(|m| m.active).count();
        Ok(vec![Measurement {
            metric: "users".into(),
            value: active as f64,
        }])
    }

    fn export_tenant(
        tenant: Tenant,
        applied: Vec<(Step, Outcome)>,
    ) -> Result<Option<BundlePart>, PluginError> {
        if applied.is_empty() {
            return Ok(None);
        }
        let crm = Crm::from_secrets()?;
        let members: Vec<Value> = tenant_members(&crm, &tenant)?
            .into_iter()
            .map(|m| json!({ "email": m.email, "role": m.role, "active": m.active }))
            .collect();
        Ok(Some(BundlePart {
            media_type: "application/json".into(),
            data: json!({ "users": members }).to_string().into_bytes(),
            instance_specific: Vec::new(),
        }))
    }

    fn import_tenant(tenant: Tenant, part: BundlePart) -> Result<Outcome, PluginError> {
        import_members(&tenant, &part)
    }

    fn observe(tenant: Tenant, applied: Vec<(Step, Outcome)>) -> Result<Vec<Drift>, PluginError> {
        let crm = Crm::from_secrets()?;
        let orgs = crm.organizations()?;
        let mut drift = Vec::new();
        for (step, outcome) in &applied {
            observe_step(&crm, &tenant, &orgs, step, outcome, &mut drift)?;
        }
        Ok(drift)
    }

    fn transition(
        tenant: Tenant,
        change: LifecycleChange,
        _reason: String,
    ) -> Result<Outcome, PluginError> {
        let crm = Crm::from_secrets()?;
        match change {
            LifecycleChange::Suspend => deactivate_all(&crm, &tenant, "suspend"),
            LifecycleChange::Cancel => deactivate_all(&crm, &tenant, "cancel"),
            LifecycleChange::Reactivate => reactivate(&crm, &tenant),
            LifecycleChange::Purge => purge(&crm, &tenant),
        }
    }
}

tenantry_plugin_sdk::register_provisioner!(CrmPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_names_are_accepted_by_bottlecrm_and_unique_per_slug() {
        assert_eq!(
            organization_name("Acme Corporation", "acme-corp"),
            "Acme Corporation - acme-corp"
        );
        assert_eq!(
            organization_name("Smith & Sons (UK): \"best\"", "smith"),
            "Smith Sons UK best - smith"
        );
        assert_eq!(organization_name("()", "x1"), "x1");
        let long = organization_name(&"a".repeat(300), "slug");
        assert_eq!(long.chars().count(), MAX_NAME);
        assert!(long.ends_with(" - slug"));
    }
}
