//! Signing in to the console. The API key is posted once, checked, and
//! exchanged for a random session token (256 bits) in a cookie:
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! sends it), `Path=/`, with a `Max-Age`, and `Secure` under
//! `--secure-cookies` (then named `__Host-…`, which browsers only accept
//! over HTTPS, for the exact host).
//!
//! The server keeps, in memory, the SHA-256 of each token with the SHA-256
//! of the key it stands for (never the key): sessions end at a restart.
//! Each has an idle and an absolute expiry; there are at most
//! [`MAX_SESSIONS`], and at most [`SESSIONS_PER_KEY`] per key (a key's
//! oldest goes first). Every request resolves the key's hash again through
//! the API's authentication (cache, rate limit, read slots), so a revoked
//! key ends its console sessions within the auth cache's TTL (1 s).
//!
//! Every form that changes something carries the session's CSRF token
//! (compared in constant time) and must come from this origin.
//!
//! Failed sign-ins close the form for a while, per client address and per
//! key prefix (see [`super::throttle`]): 429 with `Retry-After`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use agentledger_core::chain::sha256;
use agentledger_core::keys::{display_prefix, generate_salt, hash_key};

use super::error::{ConsoleError, render};
use super::throttle::{SignInThrottle, retry_after_secs};
use crate::auth::{Caller, caller_for_key_hash};
use crate::error::ApiError;
use crate::state::AppState;

/// A session unused this long is over.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session is over this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Signed-in browsers kept at once; sign-ins beyond are refused (503).
pub const MAX_SESSIONS: usize = 10_000;
/// Signed-in browsers per key; a key's oldest is signed out beyond.
pub const SESSIONS_PER_KEY: usize = 16;

struct Entry {
    key_hash: [u8; 32],
    csrf: [u8; 32],
    created: Instant,
    last_seen: Instant,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.created) < ABSOLUTE && now.duration_since(self.last_seen) < IDLE
    }
}

/// The console's signed-in browsers, by SHA-256 of their token.
pub struct ConsoleState {
    secure: bool,
    sessions: Mutex<HashMap<[u8; 32], Entry>>,
    throttle: SignInThrottle,
}

impl ConsoleState {
    pub fn new(secure_cookies: bool) -> Self {
        ConsoleState {
            secure: secure_cookies,
            sessions: Mutex::new(HashMap::new()),
            throttle: SignInThrottle::new(),
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-agentledger_console"
        } else {
            "agentledger_console"
        }
    }

    /// A new session for the key: its token (for the cookie) and CSRF token.
    fn open(&self, key_hash: [u8; 32]) -> Result<[u8; 32], ConsoleError> {
        let now = Instant::now();
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, e| e.live(now));
        let mut mine: Vec<([u8; 32], Instant)> = m
            .iter()
            .filter(|(_, e)| e.key_hash == key_hash)
            .map(|(t, e)| (*t, e.created))
            .collect();
        if mine.len() >= SESSIONS_PER_KEY {
            mine.sort_by_key(|(_, created)| *created);
            for (t, _) in mine.iter().take(mine.len() + 1 - SESSIONS_PER_KEY) {
                m.remove(t);
            }
        }
        if m.len() >= MAX_SESSIONS {
            return Err(ConsoleError::Api(ApiError::Overloaded));
        }
        let token = generate_salt();
        m.insert(
            sha256(&token),
            Entry {
                key_hash,
                csrf: generate_salt(),
                created: now,
                last_seen: now,
            },
        );
        Ok(token)
    }

    /// The live session of a token: its key's hash and CSRF token; touches it.
    fn find(&self, token: &[u8; 32]) -> Option<([u8; 32], [u8; 32])> {
        let now = Instant::now();
        let id = sha256(token);
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(&id) {
            Some(e) if e.live(now) => {
                e.last_seen = now;
                Some((e.key_hash, e.csrf))
            }
            Some(_) => {
                m.remove(&id);
                None
            }
            None => None,
        }
    }

    fn close(&self, token: &[u8; 32]) {
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(&sha256(token));
    }

    /// Sign out every browser of a key (its key no longer authenticates).
    fn close_key(&self, key_hash: &[u8; 32]) {
        let mut m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, e| &e.key_hash != key_hash);
    }

    /// Browsers signed in now (for tests and metrics).
    pub fn count(&self) -> usize {
        let now = Instant::now();
        let m = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        m.values().filter(|e| e.live(now)).count()
    }

    fn set_cookie(&self, token: &[u8; 32]) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
            self.cookie_name(),
            hex::encode(token),
            ABSOLUTE.as_secs()
        );
        HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
    }

    fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}",
            self.cookie_name()
        );
        HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
    }

    /// The session token in the request's cookies, if well formed.
    fn token(&self, headers: &HeaderMap) -> Option<[u8; 32]> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| hex::decode(v).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
    }
}

/// A signed-in browser: the API caller its key stands for, and the CSRF
/// token its forms must carry.
pub struct Signed {
    pub caller: Caller,
    csrf: [u8; 32],
    token: [u8; 32],
}

impl Signed {
    pub fn csrf(&self) -> String {
        hex::encode(self.csrf)
    }

    /// Refuse a form that does not carry this session's token, or that
    /// another origin sent.
    pub fn check_form(&self, headers: &HeaderMap, token: &str) -> Result<(), ConsoleError> {
        if !same_origin(headers) {
            return Err(ConsoleError::Csrf);
        }
        let given = hex::decode(token.trim()).unwrap_or_default();
        if given.len() != 32 || !bool::from(given.ct_eq(&self.csrf)) {
            return Err(ConsoleError::Csrf);
        }
        Ok(())
    }

    pub fn require_admin(&self) -> Result<(), ConsoleError> {
        if self.caller.admin {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "this page needs an admin key of the project",
            ))
        }
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let token = st
            .console
            .token(&parts.headers)
            .ok_or(ConsoleError::SignIn)?;
        let (key_hash, csrf) = st.console.find(&token).ok_or(ConsoleError::SignIn)?;
        let read = matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        match caller_for_key_hash(st, key_hash, read).await {
            Ok(caller) => Ok(Signed {
                caller,
                csrf,
                token,
            }),
            Err(ApiError::Unauthorized(_)) => {
                // The key was revoked: every browser it signed in is out.
                st.console.close_key(&key_hash);
                Err(ConsoleError::SignIn)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a form post came from a page of this origin. Current browsers
/// send `Sec-Fetch-Site`, which decides: same-origin (or `none`, typed by
/// the user). Without it, an `Origin` header must name this host; pages
/// sent with `Referrer-Policy: no-referrer` make browsers post `Origin:
/// null`, which says nothing either way. A request with neither (an old
/// client, curl) is judged by its CSRF token alone.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let origin = match headers.get(header::ORIGIN) {
        Some(o) if o.as_bytes() != b"null" => o.as_bytes(),
        _ => return true,
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin == format!("http://{host}").as_bytes() || origin == format!("https://{host}").as_bytes()
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    css: String,
    error: Option<&'static str>,
}

pub async fn sign_in_page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if st
        .console
        .token(&headers)
        .and_then(|t| st.console.find(&t))
        .is_some()
    {
        return Redirect::to("/console").into_response();
    }
    page(StatusCode::OK, None)
}

fn page(status: StatusCode, error: Option<&'static str>) -> Response {
    let p = SignInPage {
        css: super::assets::stylesheet(),
        error,
    };
    match render(&p) {
        Ok(mut r) => {
            *r.status_mut() = status;
            r
        }
        Err(e) => e.into_response(),
    }
}

/// The client's address, as the connection gave it (none when the app is
/// driven without a connection, e.g. in a unit test).
pub struct ClientAddr(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The sign-in page again, 429, with `Retry-After`.
fn throttled(wait: Duration) -> Response {
    let secs = retry_after_secs(wait);
    let mut r = page(
        StatusCode::TOO_MANY_REQUESTS,
        Some("Too many failed sign-ins from here or for this key. Wait a little and try again."),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

#[derive(Deserialize)]
pub struct SignInForm {
    key: String,
}

/// Exchange a posted API key for a console session.
pub async fn sign_in(
    State(st): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    // Login CSRF: another site must not sign this browser in to its project.
    if !same_origin(&headers) {
        return ConsoleError::Csrf.into_response();
    }
    let key = form.key.trim();
    let prefix = display_prefix(key);
    let throttle = &st.console.throttle;
    if let Some(wait) = throttle.closed_for(addr, &prefix) {
        tracing::warn!(client = ?addr, prefix = %prefix, "console sign-in throttled");
        return throttled(wait);
    }
    if key.is_empty() || key.len() > 512 {
        throttle.failed(addr, &prefix);
        return page(
            StatusCode::UNAUTHORIZED,
            Some("That is not a valid API key."),
        );
    }
    let hash = hash_key(key);
    match caller_for_key_hash(&st, hash, false).await {
        Ok(caller) => match st.console.open(hash) {
            Ok(token) => {
                // A browser signing in again leaves no older session behind.
                if let Some(old) = st.console.token(&headers) {
                    st.console.close(&old);
                }
                tracing::info!(key = %caller.key_id, project = %caller.project.name, "console sign-in");
                let mut r = Redirect::to("/console").into_response();
                r.headers_mut()
                    .insert(header::SET_COOKIE, st.console.set_cookie(&token));
                r
            }
            Err(e) => e.into_response(),
        },
        Err(ApiError::Unauthorized(_)) => {
            throttle.failed(addr, &prefix);
            tracing::info!(client = ?addr, prefix = %prefix, "console sign-in failed");
            page(
                StatusCode::UNAUTHORIZED,
                Some("That key is unknown or revoked."),
            )
        }
        Err(e) => ConsoleError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// End this browser's session (the token is forgotten server-side).
pub async fn sign_out(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &form.csrf)?;
    st.console.close(&signed.token);
    let mut r = Redirect::to("/console/sign-in").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, st.console.clear_cookie());
    Ok(r)
}
