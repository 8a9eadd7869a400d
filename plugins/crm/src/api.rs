//! BottleCRM's REST API as the plugin uses it, through the host's `http` and `secrets`.
//!
//! The operator credential (secret `crm-token`) is a long-lived access token of an operator
//! user that belongs to no organization of its own. Every organization it creates makes it that
//! organization's ADMIN; `POST /api/auth/switch-org/` then gives a token bound to that
//! organization, which nearly every other call needs.

use serde_json::{Value, json};
use tenantry_plugin_sdk::backend::{self, Answer, Backend, Body};
use tenantry_plugin_sdk::provisioner::PluginError;
use tenantry_plugin_sdk::secrets;

/// How long one call may take.
const TIMEOUT_MS: u32 = 20_000;

/// Users listed per request, and the most the plugin reads of one organization.
const PAGE: usize = 25;
const MAX_MEMBERS: usize = 100_000;

pub struct Crm {
    api: Backend,
    /// The operator's own token (an organization's session carries another).
    token: String,
}

/// An organization the operator belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: String,
    pub name: String,
}

/// A token bound to one organization, and the operator's own membership in it.
pub struct Session {
    pub org: Org,
    token: String,
    /// The operator's profile id in this organization (never deactivated or removed).
    pub operator_profile: String,
}

/// A member of an organization.
#[derive(Debug, Clone)]
pub struct Member {
    /// The user's id (what `/api/user/<id>/…` takes).
    pub user_id: String,
    pub email: String,
    pub role: String,
    pub active: bool,
}

/// What a change of a member's status found.
pub enum Changed {
    Done,
    /// The member is not in the organization (any more).
    Gone,
}

/// What removing a member did.
pub enum Removed {
    Deleted,
    /// BottleCRM keeps members with linked records (time entries, approvals): deactivated.
    Deactivated,
    Gone,
}

impl Crm {
    /// The CRM of the configured `url` and the granted secret `crm-token`.
    pub fn from_secrets() -> Result<Crm, PluginError> {
        let url = backend::setting("crm", "url", "crm-url")?;
        let token = secrets::get("crm-token").map_err(|e| {
            PluginError::Permanent(format!(
                "the BottleCRM operator token (secret crm-token): {e}"
            ))
        })?;
        let token = token.trim().to_owned();
        let mut api = Backend::new("BottleCRM", "crm", &url)
            .require_http("url")?
            .with_timeouts(TIMEOUT_MS, TIMEOUT_MS);
        if token.len() >= 8 {
            api.hide(&token);
        }
        Ok(Crm { api, token })
    }

    /// Sends one request with `token`; a status is an answer, whatever it is.
    fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Answer, PluginError> {
        let bearer = format!("Bearer {token}");
        let body = body.map_or(Body::None, Body::Json);
        let what = format!("{method} {path}");
        self.api
            .send_with(method, path, &[("Authorization", &bearer)], body, &what)
    }

    /// The error for an answer that is not a success: 429 and 5xx may pass, other refusals
    /// will not. Carries the CRM's own message, never a token.
    fn failure(&self, what: &str, answer: &Answer) -> PluginError {
        let status = answer.status;
        // A token BottleCRM does not take: 401, or 403 "Given token not valid…".
        let refused_token = status == 401
            || (status == 403
                && backend::error_message(&answer.body)
                    .to_lowercase()
                    .contains("token not valid"));
        match self.api.status_error(what, answer) {
            PluginError::Permanent(message) if refused_token => PluginError::Permanent(format!(
                "{message} (is the secret crm-token a valid operator token?)"
            )),
            other => other,
        }
    }

    /// A call that must succeed (2xx).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, PluginError> {
        let answer = self.send(method, path, token, body)?;
        if answer.is_success() {
            Ok(answer.json())
        } else {
            Err(self.failure(what, &answer))
        }
    }

    /// The organizations the operator belongs to (BottleCRM lists no others).
    pub fn organizations(&self) -> Result<Vec<Org>, PluginError> {
        let body = self.call(
            "GET",
            "/api/org/",
            &self.token,
            None,
            "listing the operator's organizations",
        )?;
        Ok(body["profile_org_list"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|entry| {
                        Some(Org {
                            id: entry["org"]["id"].as_str()?.to_owned(),
                            name: entry["org"]["name"].as_str()?.to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The organization with id `id`, or else named `name`, among the operator's.
    pub fn find_organization(
        &self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Option<Org>, PluginError> {
        let orgs = self.organizations()?;
        if let Some(id) = id
            && let Some(org) = orgs.iter().find(|o| o.id == id)
        {
            return Ok(Some(org.clone()));
        }
        Ok(name.and_then(|name| orgs.into_iter().find(|o| o.name == name)))
    }

    /// Creates an organization (the operator becomes its ADMIN). A refusal (a name taken by
    /// an organization the operator does not belong to...) is a permanent error with the
    /// CRM's message.
    pub fn create_organization(&self, name: &str) -> Result<Org, PluginError> {
        let body = self.call(
            "POST",
            "/api/org/",
            &self.token,
            Some(&json!({ "name": name })),
            &format!("creating organization \"{name}\""),
        )?;
        let id = body["org"]["id"].as_str().ok_or_else(|| {
            PluginError::Permanent(format!(
                "creating organization \"{name}\": BottleCRM's answer has no org.id"
            ))
        })?;
        Ok(Org {
            id: id.to_owned(),
            name: body["org"]["name"].as_str().unwrap_or(name).to_owned(),
        })
    }

    /// A session in organization `org_id`; none when the organization is gone or the
    /// operator is no longer a member.
    pub fn session(&self, org_id: &str) -> Result<Option<Session>, PluginError> {
        let answer = self.send(
            "POST",
            "/api/auth/switch-org/",
            &self.token,
            Some(&json!({ "org_id": org_id })),
        )?;
        let (status, body) = (answer.status, answer.json());
        match status {
            200..=299 => {
                let token = body["access_token"].as_str().ok_or_else(|| {
                    PluginError::Permanent(
                        "switching organization: BottleCRM's answer has no access_token".into(),
                    )
                })?;
                Ok(Some(Session {
                    org: Org {
                        id: body["current_org"]["id"]
                            .as_str()
                            .unwrap_or(org_id)
                            .to_owned(),
                        name: body["current_org"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    },
                    token: token.to_owned(),
                    operator_profile: body["profile"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                }))
            }
            403 | 404 => Ok(None),
            _ => Err(self.failure(&format!("switching to organization {org_id}"), &answer)),
        }
    }

    /// Every member of the session's organization but the operator, active or not. The list
    /// is paginated (10 a page by default): read page by page.
    pub fn members(&self, session: &Session) -> Result<Vec<Member>, PluginError> {
        let mut members = Vec::new();
        let mut offset = 0;
        loop {
            let body = self.call(
                "GET",
                &format!("/api/users/?limit={PAGE}&offset={offset}"),
                &session.token,
                None,
                &format!("listing the users of organization {}", session.org.id),
            )?;
            let mut full_page = false;
            for (list, active) in [
                (&body["active_users"]["active_users"], true),
                (&body["inactive_users"]["inactive_users"], false),
            ] {
                let entries = list.as_array().map(Vec::as_slice).unwrap_or_default();
                full_page |= entries.len() >= PAGE;
                for entry in entries {
                    let (Some(user_id), Some(profile_id), Some(email)) = (
                        entry["user_details"]["id"].as_str(),
                        entry["id"].as_str(),
                        entry["user_details"]["email"].as_str(),
                    ) else {
                        continue;
                    };
                    if profile_id == session.operator_profile
                        || members.iter().any(|m: &Member| m.user_id == user_id)
                    {
                        continue;
                    }
                    members.push(Member {
                        user_id: user_id.to_owned(),
                        email: email.to_owned(),
                        role: entry["role"].as_str().unwrap_or_default().to_owned(),
                        active: active && entry["is_active"].as_bool().unwrap_or(true),
                    });
                }
            }
            if !full_page || offset >= MAX_MEMBERS {
                return Ok(members);
            }
            offset += PAGE;
        }
    }

    /// The member with `email` (case-insensitive).
    pub fn member(&self, session: &Session, email: &str) -> Result<Option<Member>, PluginError> {
        Ok(self
            .members(session)?
            .into_iter()
            .find(|m| m.email.eq_ignore_ascii_case(email)))
    }

    /// Adds `email` to the session's organization with `role`. "Already exists" is success.
    pub fn add_member(
        &self,
        session: &Session,
        email: &str,
        role: &str,
    ) -> Result<(), PluginError> {
        let answer = self.send(
            "POST",
            "/api/users/",
            &session.token,
            Some(&json!({ "email": email, "role": role })),
        )?;
        let status = answer.status;
        if (200..300).contains(&status)
            || (status == 400 && backend::error_message(&answer.body).contains("already exists"))
        {
            return Ok(());
        }
        Err(self.failure(
            &format!("adding user {email} to organization {}", session.org.id),
            &answer,
        ))
    }

    /// Activates or deactivates a member.
    pub fn set_active(
        &self,
        session: &Session,
        member: &Member,
        active: bool,
    ) -> Result<Changed, PluginError> {
        let status_word = if active { "Active" } else { "Inactive" };
        let answer = self.send(
            "POST",
            &format!("/api/user/{}/status/", member.user_id),
            &session.token,
            Some(&json!({ "status": status_word })),
        )?;
        let status = answer.status;
        match status {
            200..=299 => Ok(Changed::Done),
            404 => Ok(Changed::Gone),
            _ => Err(self.failure(
                &format!(
                    "setting user {} {status_word} in organization {}",
                    member.email, session.org.id
                ),
                &answer,
            )),
        }
    }

    /// Removes a member from the organization; one BottleCRM refuses to delete (linked
    /// records) is deactivated instead.
    pub fn remove(&self, session: &Session, member: &Member) -> Result<Removed, PluginError> {
        let answer = self.send(
            "DELETE",
            &format!("/api/user/{}/", member.user_id),
            &session.token,
            None,
        )?;
        let status = answer.status;
        match status {
            200..=299 => Ok(Removed::Deleted),
            404 => Ok(Removed::Gone),
            409 => match self.set_active(session, member, false)? {
                Changed::Done => Ok(Removed::Deactivated),
                Changed::Gone => Ok(Removed::Gone),
            },
            _ => Err(self.failure(
                &format!(
                    "removing user {} from organization {}",
                    member.email, session.org.id
                ),
                &answer,
            )),
        }
    }
}
