//! The web console: server-rendered pages over the same store and the same
//! tenancy as the API, at `/console` (see docs/console.md).
//!
//! Every page is an askama template (checked at compile time, every value
//! HTML-escaped); the one script and the one stylesheet are ours, embedded
//! in the binary and served under names that carry their hash. Every answer
//! of the console carries a strict Content-Security-Policy: no inline
//! script, no inline style, nothing from another origin.

mod alerts;
mod assets;
mod auth;
mod error;
mod keys;
mod overview;
mod pages;
mod payload;
mod policies;
mod throttle;
mod views;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::{get, post};

use crate::state::AppState;

pub use auth::ConsoleState;

/// The policy every console answer carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(overview::overview))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console/sign-in",
            get(auth::sign_in_page).post(auth::sign_in),
        )
        .route("/console/sign-out", post(auth::sign_out))
        .route("/console/sessions", get(pages::sessions))
        .route("/console/sessions/{id}", get(pages::session))
        .route("/console/sessions/{id}/verify", get(pages::verify))
        .route("/console/sessions/{id}/finding", get(pages::finding))
        .route("/console/sessions/{id}/export", get(pages::export))
        .route("/console/events/{id}", get(pages::event))
        .route("/console/search", get(pages::search))
        .route("/console/live", get(pages::live))
        .route("/console/live/stream", get(pages::live_stream))
        .route(
            "/console/policies",
            get(policies::page).post(policies::submit),
        )
        .route("/console/keys", get(keys::page).post(keys::create))
        .route("/console/keys/revoke", post(keys::revoke))
        .route("/console/alerts", get(alerts::page))
        .route("/console/alerts/resolve", post(alerts::resolve))
        .route("/console/alerts/rules", post(alerts::create_rule))
        .route("/console/alerts/rules/delete", post(alerts::delete_rule))
        .route(
            "/console/alerts/destinations",
            post(alerts::create_destination),
        )
        .route(
            "/console/alerts/destinations/delete",
            post(alerts::delete_destination),
        )
        .route("/console/assets/{name}", get(assets::serve))
        // Any other console path: the console's own 404 page, under its headers.
        .route(
            "/console/{*rest}",
            get(|| async { error::ConsoleError::NotFound("no such page") }),
        )
        .layer(middleware::from_fn(security_headers))
}

/// Headers on every console answer, pages, errors and assets alike.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    // Pages show a project's data: never kept by a shared cache or the
    // browser's history cache. Assets set their own (immutable) policy.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
