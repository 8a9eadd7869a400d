//! The application's one error type, mapped once to HTTP: a JSON body
//! `{"error":{"code","message","details"}}` for the API; the portal renders the same error as a page.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Value, json};

/// A rule a field broke, named so that a client can show it next to the field.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as named in the request (`slug`, `contact.email`, …).
    pub field: String,
    /// A stable rule name (`pattern`, `length`, `reserved`, `required`, …).
    pub rule: String,
    /// What a person should read.
    pub message: String,
}

impl FieldError {
    pub fn new(
        field: impl Into<String>,
        rule: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} `{key}` not found")]
    NotFound { what: &'static str, key: String },
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type: {0}")]
    UnsupportedMediaType(String),
    #[error("{}", validation_message(.0))]
    Validation(Vec<FieldError>),
    /// What was asked would take a metric past its hard limit: refused, not counted.
    #[error("{message}")]
    QuotaExceeded { message: String, details: Value },
    #[error("{0}")]
    Unavailable(String),
    #[error("method {method} is not allowed here (allowed: {})", .allowed.join(", "))]
    MethodNotAllowed {
        method: String,
        allowed: Vec<String>,
    },
    #[error("too many requests: {what}; retry in {retry_after_secs} s")]
    RateLimited { what: String, retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

fn validation_message(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

pub type AppResult<T> = Result<T, AppError>;

const UNKNOWN_STORED_WORD: &str = "unknown_stored_word";

impl AppError {
    pub fn not_found(what: &'static str, key: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            key: key.into(),
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        rule: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Validation(vec![FieldError::new(field, rule, message)])
    }

    pub fn conflict(code: &'static str, message: impl Into<String>, details: Value) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
            details,
        }
    }

    /// A row holds a word outside its set (a downgrade, a hand-edited row): the row is not
    /// used, and nothing is guessed in its place.
    pub fn unknown_stored_word(word: &crate::words::UnknownValue) -> Self {
        Self::Conflict {
            code: UNKNOWN_STORED_WORD,
            message: format!(
                "the database holds an {word}, which this version does not know: the record \
                 cannot be used until the row is corrected (or the version that wrote it runs)"
            ),
            details: json!({ "kind": word.what, "value": word.value }),
        }
    }

    /// Whether this is [`AppError::unknown_stored_word`].
    pub fn is_unknown_stored_word(&self) -> bool {
        matches!(self, AppError::Conflict { code, .. } if *code == UNKNOWN_STORED_WORD)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Unauthorized => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound { .. } => "not_found",
            AppError::Conflict { code, .. } => code,
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Validation(_) => "validation_failed",
            AppError::QuotaExceeded { .. } => "quota_exceeded",
            AppError::Unavailable(_) => "unavailable",
            AppError::MethodNotAllowed { .. } => "method_not_allowed",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Internal(_) => "internal",
        }
    }

    pub fn details(&self) -> Value {
        match self {
            AppError::Validation(fields) => json!({ "fields": fields }),
            AppError::Conflict { details, .. } if details.is_object() => details.clone(),
            AppError::Conflict { .. } => json!({}),
            AppError::QuotaExceeded { details, .. } => details.clone(),
            AppError::NotFound { what, key } => json!({ "resource": what, "key": key }),
            AppError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            AppError::RateLimited {
                retry_after_secs, ..
            } => json!({ "retry_after_seconds": retry_after_secs }),
            AppError::MethodNotAllowed { allowed, .. } => json!({ "allowed": allowed }),
            _ => json!({}),
        }
    }

    /// The error as an `anyhow::Error` for the command line and start-up code: an internal error
    /// keeps its chain, any other becomes its message.
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            AppError::Internal(inner) => inner,
            other => anyhow::anyhow!(other.to_string()),
        }
    }

    /// The field errors of a validation failure, for forms.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            AppError::Validation(fields) => fields,
            _ => &[],
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound { .. } => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::QuotaExceeded { .. } => StatusCode::FORBIDDEN,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let AppError::Internal(err) = self {
            // Logged once, here, where it is answered. The chain never reaches the client.
            tracing::error!("internal error: {err:#}");
        }
        let mut builder = HttpResponse::build(self.status_code());
        if matches!(self, AppError::Unauthorized) {
            builder.insert_header(("WWW-Authenticate", "Bearer realm=\"tenantry\""));
        }
        if let AppError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            builder.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        if let AppError::MethodNotAllowed { allowed, .. } = self {
            builder.insert_header(("Allow", allowed.join(", ")));
        }
        builder.json(ErrorBody::from(self))
    }
}

/// The JSON error envelope of every API error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// What the error is about, by kind: `fields` (each broken rule) for `validation_failed`,
    /// `resource` and `key` for `not_found`, `retry_after_seconds`, `limit_bytes`, `allowed`
    /// methods… An empty object when there is nothing more to say.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<&AppError> for ErrorBody {
    fn from(err: &AppError) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: err.code().to_string(),
                message: err.to_string(),
                details: err.details(),
            },
        }
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match err {
            Error::NotFound => AppError::not_found("record", "?"),
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => AppError::conflict(
                "conflict",
                "a record with this key already exists",
                Value::Null,
            ),
            Error::DeserializationError(inner) => {
                // diesel wraps a field's error in one that names the field.
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*inner);
                while let Some(error) = cause {
                    if let Some(word) = error.downcast_ref::<crate::words::UnknownValue>() {
                        return AppError::unknown_stored_word(word);
                    }
                    cause = error.source();
                }
                AppError::Internal(anyhow::anyhow!(inner.to_string()).context("database error"))
            }
            other => AppError::Internal(anyhow::Error::new(other).context("database error")),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for AppError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        tracing::warn!("database pool: {err}");
        AppError::Unavailable("the database is not available right now; retry shortly".into())
    }
}
