//! The console's own script and stylesheet, embedded in the binary and
//! served under names carrying the first 16 hex digits of their SHA-256:
//! a page always names the version it was rendered with, so browsers may
//! keep them for a year (`immutable`), and an ETag answers revalidations.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    name: String,
    etag: String,
    body: &'static [u8],
    content_type: &'static str,
}

fn asset(stem: &str, ext: &str, body: &'static [u8], content_type: &'static str) -> Asset {
    let digest = hex::encode(Sha256::digest(body));
    Asset {
        name: format!("{stem}-{}.{ext}", &digest[..16]),
        etag: format!("\"{}\"", &digest[..32]),
        body,
        content_type,
    }
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        asset(
            "console",
            "js",
            include_bytes!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        asset(
            "console",
            "css",
            include_bytes!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
    ]
});

/// The script's path, as pages name it.
pub fn script() -> String {
    format!("/console/assets/{}", ASSETS[0].name)
}

/// The stylesheet's path.
pub fn stylesheet() -> String {
    format!("/console/assets/{}", ASSETS[1].name)
}

pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return super::error::ConsoleError::NotFound("no such asset").into_response();
    };
    let cache = HeaderValue::from_static("public, max-age=31536000, immutable");
    let etag = HeaderValue::from_str(&a.etag).unwrap_or(HeaderValue::from_static("\"\""));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == a.etag.as_bytes())
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        a.body,
    )
        .into_response()
}
