//! The MCP server: agents and their developers ask the ledger questions over
//! the Model Context Protocol, at `/mcp` on the same port as everything else
//! (Streamable HTTP transport, served by the official Rust SDK, `rmcp`).
//! docs/mcp.md is the user's page; this says why it is built this way.
//!
//! - **The key is checked here, before any MCP processing.** The route
//!   authenticates the API key exactly as every other route does (a missing
//!   or bad key is a 401 in the API's error envelope, and rmcp never sees the
//!   request), then hands the request to rmcp with the caller and the app
//!   state in its extensions. The tools ([`tools`]) take the project from
//!   that caller and from nowhere else, so no tool argument can name another
//!   project's data.
//! - **Stateless.** Every POST carries its key and is answered on its own, as
//!   JSON (no `Mcp-Session-Id`, no SSE stream kept open): nothing is held
//!   between requests, so a revoked key stops working within the key cache's
//!   TTL like everywhere else, several nodes can serve `/mcp` behind one
//!   balancer, and there is no MCP session table to bound.
//! - **Reads only.** Every tool reads (`check_policy` judges without
//!   recording anything), so a request holds one of its key's read slots
//!   like a GET does (`--reads-per-key`).
//! - **Bounded.** The body is read with a limit and the server's body timeout
//!   before rmcp sees it; each tool bounds its own inputs (page sizes, query
//!   length) and says so in its JSON schema.
//! - **No Host allow-list.** rmcp accepts only loopback `Host` headers by
//!   default, a guard against DNS rebinding for unauthenticated servers on a
//!   developer's machine. This endpoint needs an API key in a header, which a
//!   rebinding page can neither know nor send, and it is served under
//!   whatever host name the operator deploys the ledger under, like the rest
//!   of the API.

pub mod args;
mod check;
mod read;
pub mod tools;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::any;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::error::ApiError;
use crate::state::AppState;

/// The path MCP is served on.
pub const PATH: &str = "/mcp";

/// The largest JSON-RPC request accepted: a `check_policy` call carries a
/// proposed action of up to the 1 MiB payload limit, escaped in JSON.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

type Service = StreamableHttpService<tools::LedgerTools, NeverSessionManager>;

pub fn router() -> Router<AppState> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(MAX_BODY_BYTES);
    let service: Service = StreamableHttpService::new(
        || Ok(tools::LedgerTools),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new().route(
        PATH,
        any(move |State(st): State<AppState>, req: Request| {
            let service = service.clone();
            async move { serve(st, service, req).await }
        }),
    )
}

/// Authenticate, read the body within its bounds, then let rmcp answer.
async fn serve(st: AppState, service: Service, req: Request) -> Result<Response, ApiError> {
    let caller = crate::auth::authenticate(req.headers(), &st, true).await?;
    let (parts, body) = req.into_parts();
    let bytes =
        crate::body::read_limited(Request::from_parts(parts.clone(), body), MAX_BODY_BYTES).await?;
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(st);
    Ok(service.handle(req).await.map(Body::new))
}
