//! The console's one error type: every failure becomes an HTML page with
//! its status (or, when the browser is not signed in, a redirect to the
//! sign-in page). Internal causes are logged, never shown.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::error::ApiError;

#[derive(Debug)]
pub enum ConsoleError {
    /// No valid console session: go and sign in.
    SignIn,
    NotFound(&'static str),
    Forbidden(&'static str),
    /// A form without its session's CSRF token, or from another origin.
    Csrf,
    BadRequest(String),
    Api(ApiError),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthorized(_) => ConsoleError::SignIn,
            other => ConsoleError::Api(other),
        }
    }
}

impl From<agentledger_store::StoreError> for ConsoleError {
    fn from(e: agentledger_store::StoreError) -> Self {
        ConsoleError::Api(e.into())
    }
}

impl From<agentledger_dialects::InputError> for ConsoleError {
    fn from(e: agentledger_dialects::InputError) -> Self {
        ConsoleError::Api(e.into())
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    message: String,
    css: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::SignIn => return Redirect::to("/console/sign-in").into_response(),
            ConsoleError::NotFound(m) => (StatusCode::NOT_FOUND, m.to_owned()),
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, m.to_owned()),
            ConsoleError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form was not sent from this console page (CSRF check failed). \
                 Reload the page and try again."
                    .to_owned(),
            ),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ConsoleError::Api(e) => {
                if let ApiError::Internal(cause) = &e {
                    tracing::error!(%cause, "console request failed");
                }
                (e.status(), e.to_string())
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error"),
            message,
            css: super::assets::stylesheet(),
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(cause = %e, "console error page did not render");
                (
                    status,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "error",
                )
                    .into_response()
            }
        }
    }
}

/// Render a page, or the error page if the template fails.
pub fn render<T: Template>(page: &T) -> Result<Response, ConsoleError> {
    page.render()
        .map(|html| Html(html).into_response())
        .map_err(|e| ConsoleError::Api(ApiError::Internal(format!("template: {e}"))))
}
