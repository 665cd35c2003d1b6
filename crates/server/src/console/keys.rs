//! Keys (admin): the project's API keys (never the keys themselves), a new
//! key shown once, and revocation. Keys of other projects are neither
//! listed nor revocable from here.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use agentledger_core::keys::{display_prefix, generate_key, hash_key};
use agentledger_store::ApiKeyInfo;

use super::auth::Signed;
use super::error::{ConsoleError, render};
use super::views::{Nav, time};
use crate::state::AppState;

/// Longest key name accepted.
const MAX_NAME: usize = 64;

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub admin: bool,
    pub created: String,
    pub revoked: String,
    /// The key this browser signed in with.
    pub yours: bool,
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    nav: Nav,
    rows: Vec<KeyRow>,
    /// A key just created: shown on this answer only.
    created: Option<String>,
}

async fn project_keys(st: &AppState, signed: &Signed) -> Result<Vec<ApiKeyInfo>, ConsoleError> {
    let project = signed.caller.project.id;
    Ok(st
        .store
        .list_keys()
        .await?
        .into_iter()
        .filter(|k| k.project.id == project)
        .collect())
}

async fn page_with(
    st: &AppState,
    signed: &Signed,
    created: Option<String>,
) -> Result<Response, ConsoleError> {
    let rows = project_keys(st, signed)
        .await?
        .into_iter()
        .map(|k| KeyRow {
            yours: k.id == signed.caller.key_id,
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            admin: k.admin,
            created: time(k.created_at),
            revoked: k.revoked_at.map(time).unwrap_or_default(),
        })
        .collect();
    render(&KeysPage {
        nav: Nav::new(signed, "keys"),
        rows,
        created,
    })
}

pub async fn page(State(st): State<AppState>, signed: Signed) -> Result<Response, ConsoleError> {
    signed.require_admin()?;
    page_with(&st, &signed, None).await
}

#[derive(Deserialize)]
pub struct CreateForm {
    csrf: String,
    name: String,
    #[serde(default)]
    admin: Option<String>,
}

/// Make a key of this project; the answer shows it once (the server keeps
/// only its hash).
pub async fn create(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<CreateForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &f.csrf)?;
    signed.require_admin()?;
    let name = f.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ConsoleError::BadRequest(format!(
            "a key's name is 1 to {MAX_NAME} printable characters"
        )));
    }
    let admin = f.admin.is_some();
    let key = generate_key();
    let info = st
        .store
        .create_key(
            &signed.caller.project.name,
            name,
            hash_key(&key),
            &display_prefix(&key),
            admin,
        )
        .await?;
    tracing::info!(by = %signed.caller.key_id, key = %info.id, admin, project = %signed.caller.project.name, "key created through the console");
    page_with(&st, &signed, Some(key)).await
}

#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: String,
    id: String,
}

pub async fn revoke(
    State(st): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&headers, &f.csrf)?;
    signed.require_admin()?;
    let mine = project_keys(&st, &signed)
        .await?
        .into_iter()
        .any(|k| k.id == f.id && k.revoked_at.is_none());
    if !mine || !st.store.revoke_key(&f.id).await? {
        return Err(ConsoleError::NotFound("no such active key in this project"));
    }
    tracing::info!(by = %signed.caller.key_id, key = %f.id, project = %signed.caller.project.name, "key revoked through the console");
    Ok(Redirect::to("/console/keys").into_response())
}
