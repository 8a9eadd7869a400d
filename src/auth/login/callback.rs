//! The callback of a login, step by step: the attempt it answers (found without a write, then
//! consumed before anything else; a state no login holds spends its address's budget), the
//! provider's error or the response's issuer, the code exchanged for tokens, the
//! id_token verified, the claims completed from userinfo, and the role they map to. Each step
//! refuses with a [`LoginFailure`] that says why; nothing is stored on the way.

use actix_web::http::StatusCode;
use openidconnect::core::{CoreGenderClaim, CoreJwsSigningAlgorithm, CoreTokenResponse};
use openidconnect::{
    AccessToken, AuthorizationCode, ClaimsVerificationError, ClientId, IdTokenClaims,
    IdTokenVerifier, IssuerUrl, JwsSigningAlgorithm as _, Nonce, OAuth2TokenResponse as _,
    PkceCodeVerifier, RequestTokenError, SignatureVerificationError, SubjectIdentifier,
    TokenResponse as _,
};
use serde_json::{Map, Value};

use super::{
    CallbackParams, Client, ClientSettings, ExtraClaims, LoginFailure, LoginUser, TenantIdToken,
    client_for, client_settings,
};
use crate::auth::{TenantScope, constant_time_eq, sha256_hex};
use crate::clock;
use crate::context::Context;
use crate::identity_providers::{Provider, ProviderError};
use crate::roles::{Role, RoleDecision};
use crate::store;
use crate::store::models::LoginAttemptRow;
use crate::tenants::{ADMIN_SLUG, Tenant};
use crate::transaction;

type Claims = IdTokenClaims<ExtraClaims, CoreGenderClaim>;

/// A refusal that sends the user back to the start.
fn start_again(reason: &'static str, message: &str) -> LoginFailure {
    LoginFailure::new(
        reason,
        StatusCode::BAD_REQUEST,
        format!("{message} Please sign in again."),
    )
}

fn unreadable_secret() -> LoginFailure {
    LoginFailure::new(
        "secret_unreadable",
        StatusCode::INTERNAL_SERVER_ERROR,
        "Signing in is not possible right now. The error was logged.",
    )
}

/// Every check of a callback at `tenant`, in order; the user it establishes.
pub(super) async fn verify(
    ctx: &Context,
    tenant: &Tenant,
    params: &CallbackParams,
    browser_cookie: Option<&str>,
    address: Option<&str>,
) -> Result<LoginUser, LoginFailure> {
    let attempt = take_attempt(ctx, tenant, params, browser_cookie, address).await?;
    refuse_provider_error(params)?;
    let settings = client_settings(ctx, tenant).await?;
    if settings.issuer != attempt.issuer || settings.client_id != attempt.client_id {
        return Err(start_again(
            "settings_changed",
            "The organisation's sign-in settings changed while you were signing in.",
        ));
    }
    let provider = ctx
        .providers
        .get(&attempt.issuer)
        .await
        .map_err(LoginFailure::provider)?;
    check_response_issuer(&provider, params, &attempt)?;
    let client = client_for(&provider.metadata, &settings, &attempt.redirect_uri)?;
    let response = exchange_code(ctx, &client, params, &attempt).await?;
    let raw_id_token = response.id_token().map(|t| t.to_string()).ok_or_else(|| {
        LoginFailure::unverified("id_token_missing", "the token response has no id_token")
    })?;
    let claims = verify_id_token(ctx, provider, &settings, &attempt, &raw_id_token).await?;
    let subject = claims.subject().as_str().to_owned();
    if subject.is_empty() || subject.len() > 255 {
        return Err(LoginFailure::unverified(
            "id_token_subject",
            "the id_token's sub is empty or longer than 255 characters",
        ));
    }
    let all_claims = claims_with_userinfo(ctx, tenant, &client, &response, &subject, &claims).await;
    let role = role_of(tenant, &all_claims)?;
    let text_claim = |name: &str| {
        all_claims
            .get(name)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(254).collect::<String>())
    };
    Ok(LoginUser {
        tenant: TenantScope {
            id: tenant.id.clone(),
            slug: tenant.slug.clone(),
        },
        platform: tenant.slug == ADMIN_SLUG,
        role,
        issuer: attempt.issuer.clone(),
        subject,
        email: text_claim("email"),
        name: text_claim("name").or_else(|| text_claim("preferred_username")),
        id_token: raw_id_token,
        next: attempt.next_path.clone(),
    })
}

/// The login attempt the callback answers, consumed first — whatever happens next, its state
/// never works again — then checked: not expired, started in this browser, at this tenant,
/// which can still log in.
///
/// Callbacks need no credential, so a state is looked for with a read before anything is
/// written (on SQLite a write takes the database's one write lock), and a state no login holds
/// spends the address's budget (`auth.callback_failures_per_address_per_minute`); an address
/// that spent it is refused before any look at the database.
async fn take_attempt(
    ctx: &Context,
    tenant: &Tenant,
    params: &CallbackParams,
    browser_cookie: Option<&str>,
    address: Option<&str>,
) -> Result<LoginAttemptRow, LoginFailure> {
    use crate::throttle::Credential;
    if let Some(wait) = ctx
        .limits
        .blocked(Credential::LoginState, None, address)
        .await
        .map_err(LoginFailure::limited)?
    {
        return Err(LoginFailure::rate_limited(wait));
    }
    let unknown = || async {
        match ctx
            .limits
            .failed(Credential::LoginState, None, address)
            .await
        {
            Ok(Some(wait)) => LoginFailure::rate_limited(wait),
            Ok(None) => start_again(
                "state_unknown",
                "This sign-in link is not valid or was already used.",
            ),
            Err(refusal) => LoginFailure::limited(refusal),
        }
    };
    let storage = |err: crate::error::AppError| {
        tracing::error!(tenant = %tenant.slug, "reading a login attempt: {err}");
        LoginFailure::new(
            "storage",
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing in is not possible right now. Please try again in a moment.",
        )
    };
    let Some(state) = params
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return Err(start_again(
            "state_missing",
            "This sign-in response is incomplete (it has no state).",
        ));
    };
    let state_hash = sha256_hex(state);
    let held = {
        let mut conn = ctx.db.conn().await.map_err(storage)?;
        store::logins::attempt_exists(&mut conn, &state_hash)
            .await
            .map_err(storage)?
    };
    if !held {
        return Err(unknown().await);
    }
    // Taken, not read: of two callbacks with one state, one gets it.
    let Some(attempt) = transaction!(ctx.db, |tx| {
        store::logins::take_attempt(tx, &state_hash).await
    })
    .map_err(storage)?
    else {
        return Err(unknown().await);
    };
    if attempt.expires_at <= clock::now() {
        return Err(start_again(
            "state_expired",
            "This sign-in attempt expired.",
        ));
    }
    let browser_ok =
        browser_cookie.is_some_and(|c| constant_time_eq(&sha256_hex(c), &attempt.browser_hash));
    if !browser_ok {
        return Err(start_again(
            "browser_mismatch",
            "This sign-in was started in another browser (or its cookie is gone).",
        ));
    }
    if attempt.tenant_id != tenant.id {
        return Err(start_again(
            "tenant_mismatch",
            "This sign-in response belongs to another organisation.",
        ));
    }
    if !tenant.status.is_active() {
        return Err(LoginFailure::tenant_unavailable(
            &tenant.name,
            tenant.status,
        ));
    }
    Ok(attempt)
}

/// An error the provider answered with instead of a code.
fn refuse_provider_error(params: &CallbackParams) -> Result<(), LoginFailure> {
    let Some(error) = &params.error else {
        return Ok(());
    };
    let description = params
        .error_description
        .as_deref()
        .map(|d| d.chars().take(300).collect::<String>());
    Err(LoginFailure::new(
        "provider_error",
        StatusCode::BAD_REQUEST,
        match error.as_str() {
            "access_denied" => {
                "Your sign-in provider did not let you sign in (access denied).".to_owned()
            }
            _ => "Your sign-in provider could not sign you in. Please try again.".to_owned(),
        },
    )
    .detail(match description {
        Some(d) => format!("{error}: {d}"),
        None => error.clone(),
    }))
}

/// RFC 9207: the response says who issued it; a response from another issuer (a mix-up) is
/// refused before its code goes anywhere, and so is one without `iss` from a provider that
/// advertises it.
fn check_response_issuer(
    provider: &Provider,
    params: &CallbackParams,
    attempt: &LoginAttemptRow,
) -> Result<(), LoginFailure> {
    let advertised = provider
        .metadata
        .additional_metadata()
        .authorization_response_iss_parameter_supported
        == Some(true);
    match params.iss.as_deref() {
        Some(iss) if iss != attempt.issuer => Err(LoginFailure::new(
            "issuer_mismatch",
            StatusCode::BAD_REQUEST,
            "This sign-in response came from a different sign-in provider than the one you \
             were sent to, so it was refused for your safety. Please sign in again.",
        )
        .detail(format!(
            "the response's iss is `{iss}`, expected `{}`",
            attempt.issuer
        ))),
        None if advertised => Err(LoginFailure::new(
            "issuer_missing",
            StatusCode::BAD_REQUEST,
            "This sign-in response does not say which provider issued it, so it was \
             refused for your safety. Please sign in again.",
        )
        .detail("the provider advertises the iss response parameter but sent none")),
        _ => Ok(()),
    }
}

/// The code exchanged for tokens at the provider's token endpoint, with the PKCE verifier.
async fn exchange_code(
    ctx: &Context,
    client: &Client,
    params: &CallbackParams,
    attempt: &LoginAttemptRow,
) -> Result<CoreTokenResponse, LoginFailure> {
    let code = params
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| start_again("code_missing", "This sign-in response has no code."))?;
    let verifier = ctx
        .keyring
        .open(
            &attempt.pkce_verifier,
            &super::pkce_context(&attempt.state_hash),
        )
        .map_err(|_| unreadable_secret())?;
    let request = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| {
            LoginFailure::provider(ProviderError {
                reason: "discovery_invalid",
                detail: e.to_string(),
            })
        })?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier));
    request
        .request_async(&|request| ctx.providers.send(request))
        .await
        .map_err(|err| match err {
            RequestTokenError::ServerResponse(answer) => LoginFailure::new(
                "token_rejected",
                StatusCode::BAD_REQUEST,
                "Your sign-in provider did not accept this sign-in. Please sign in again; if it \
                 keeps failing, tell your administrator (the tenant's client ID or secret may \
                 be wrong).",
            )
            .detail(format!("the token endpoint answered `{}`", answer.error())),
            RequestTokenError::Parse(err, _) => LoginFailure::unverified(
                "token_response_invalid",
                format!("the token response is not valid: {err}"),
            ),
            RequestTokenError::Request(err) => LoginFailure::provider(ProviderError {
                reason: "provider_unreachable",
                detail: format!("token endpoint: {err}"),
            }),
            RequestTokenError::Other(other) => LoginFailure::provider(ProviderError {
                reason: "provider_unreachable",
                detail: format!("token endpoint: {other}"),
            }),
        })
}

/// The id_token's claims, once its signature (asymmetric algorithms only, the issuer's keys —
/// fetched once more for a key the cache does not hold), issuer, audience, `exp`, `iat`,
/// nonce and `azp` are checked.
async fn verify_id_token(
    ctx: &Context,
    provider: std::sync::Arc<Provider>,
    settings: &ClientSettings,
    attempt: &LoginAttemptRow,
    raw_id_token: &str,
) -> Result<Claims, LoginFailure> {
    let id_token: TenantIdToken = raw_id_token.parse().map_err(|e| {
        LoginFailure::unverified(
            "id_token_invalid",
            format!("the id_token does not parse: {e}"),
        )
    })?;
    let attempt_minutes = i64::from(ctx.config.auth.login_attempt_minutes);
    let verifier_for = |provider: &Provider| {
        let supported: Vec<CoreJwsSigningAlgorithm> = provider
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| !alg.uses_shared_secret() && **alg != CoreJwsSigningAlgorithm::None)
            .cloned()
            .collect();
        let allowed = if supported.is_empty() {
            vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]
        } else {
            supported
        };
        // A public client's verifier: no client secret, so an HS* token can never verify.
        IdTokenVerifier::new_public_client(
            ClientId::new(settings.client_id.clone()),
            IssuerUrl::new(attempt.issuer.clone()).expect("a stored issuer is a URL"),
            provider.metadata.jwks().clone(),
        )
        .set_allowed_algs(allowed)
        .set_issue_time_verifier_fn(move |iat| {
            let now = chrono::Utc::now();
            if iat > now + chrono::Duration::minutes(5) {
                Err(format!("issued in the future ({iat})"))
            } else if iat < now - chrono::Duration::minutes(attempt_minutes + 5) {
                Err(format!("issued too long ago ({iat})"))
            } else {
                Ok(())
            }
        })
    };
    let nonce = Nonce::new(attempt.nonce.clone());
    let claims = match id_token.claims(&verifier_for(&provider), &nonce) {
        Ok(claims) => claims.clone(),
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey
            | SignatureVerificationError::AmbiguousKeyId(_),
        )) => {
            // The provider may have rotated its keys since we cached them (a kid we do not
            // hold, or a token without kid that our cached set cannot tell apart): fetch them
            // once more.
            let refreshed = ctx
                .providers
                .refresh_keys(&attempt.issuer, &provider)
                .await
                .map_err(LoginFailure::provider)?;
            id_token
                .claims(&verifier_for(&refreshed), &nonce)
                .map_err(claims_failure)?
                .clone()
        }
        Err(err) => return Err(claims_failure(err)),
    };
    // OpenID Connect Core §3.1.3.7 (4, 5): openidconnect leaves `azp` to the client. Several
    // audiences are already refused (none of them is trusted besides us).
    if let Some(azp) = claims.authorized_party()
        && azp.as_str() != settings.client_id
    {
        return Err(LoginFailure::unverified(
            "id_token_azp",
            format!(
                "the id_token was issued to `{}` (azp), not to this client",
                azp.as_str()
            ),
        ));
    }
    Ok(claims)
}

/// The id_token's claims, with those the role mapping needs from the userinfo endpoint when the
/// id_token lacks them (providers that keep the id_token small).
async fn claims_with_userinfo(
    ctx: &Context,
    tenant: &Tenant,
    client: &Client,
    response: &CoreTokenResponse,
    subject: &str,
    claims: &Claims,
) -> Map<String, Value> {
    let mut all_claims = match serde_json::to_value(claims) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    if !all_claims.contains_key(&tenant.role_mapping.claim)
        && let Ok(request) = client.user_info(
            AccessToken::new(response.access_token().secret().clone()),
            Some(SubjectIdentifier::new(subject.to_owned())),
        )
    {
        match request
            .request_async::<ExtraClaims, _, CoreGenderClaim>(&|request| {
                ctx.providers.send(request)
            })
            .await
        {
            Ok(info) => {
                if let Ok(Value::Object(extra)) = serde_json::to_value(&info) {
                    for (key, value) in extra {
                        all_claims.entry(key).or_insert(value);
                    }
                }
            }
            Err(err) => {
                let err = crate::telemetry::escape_for_log(&err.to_string()).into_owned();
                tracing::warn!(tenant = %tenant.slug, "userinfo request failed: {err}");
            }
        }
    }
    all_claims
}

/// The role the tenant's mapping gives these claims; a refusal when it gives none.
fn role_of(tenant: &Tenant, claims: &Map<String, Value>) -> Result<Role, LoginFailure> {
    let mapping = &tenant.role_mapping;
    match mapping.decide(claims) {
        RoleDecision::Granted(role) => Ok(role),
        RoleDecision::NoAccess => Err(LoginFailure::new(
            "no_role",
            StatusCode::FORBIDDEN,
            format!(
                "You signed in, but your account has no access to {}. Please ask your \
                 administrator for access.",
                tenant.name
            ),
        )
        .detail(format!(
            "no value of the `{}` claim is mapped to a role",
            mapping.claim
        ))),
    }
}

fn claims_failure(err: ClaimsVerificationError) -> LoginFailure {
    let reason = match &err {
        ClaimsVerificationError::InvalidIssuer(_) => "id_token_issuer",
        ClaimsVerificationError::InvalidAudience(_) => "id_token_audience",
        // Our `iat` check reports through the same variant as `exp`.
        ClaimsVerificationError::Expired(text) if text.contains("issued") => "id_token_iat",
        ClaimsVerificationError::Expired(_) => "id_token_expired",
        ClaimsVerificationError::InvalidNonce(_) => "id_token_nonce",
        ClaimsVerificationError::SignatureVerification(sig) => match sig {
            SignatureVerificationError::NoSignature
            | SignatureVerificationError::DisallowedAlg(_)
            | SignatureVerificationError::UnsupportedAlg(_) => "id_token_algorithm",
            SignatureVerificationError::NoMatchingKey => "id_token_unknown_key",
            _ => "id_token_signature",
        },
        _ => "id_token_invalid",
    };
    let detail = match &err {
        ClaimsVerificationError::SignatureVerification(sig) => format!("{err}: {sig}"),
        _ => err.to_string(),
    };
    LoginFailure::unverified(reason, detail)
}
