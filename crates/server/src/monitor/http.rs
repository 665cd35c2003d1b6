//! The monitor's HTTP client: GETs with the project's API key, bounded answers, one timeout
//! per request (like the witness client: webpki roots, rustls with ring, no redirects).

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<bytes::Bytes>,
>;

/// A request that did not give an answer the monitor can judge (the round is not complete;
/// nothing is concluded about the log).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {path}: {reason}")]
    Unreachable { path: String, reason: String },
    #[error("GET {path}: HTTP {status}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("GET {path}: the answer is larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
}

impl FetchError {
    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct LogClient {
    client: Client,
    base: String,
    key: String,
    timeout: Duration,
}

impl LogClient {
    pub fn new(base: &str, key: &str, timeout: Duration) -> Result<LogClient, String> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("--url must start with http:// or https://: {base}"));
        }
        let client = crate::alerts::deliver::outbound_client(timeout)?;
        Ok(LogClient {
            client,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            timeout,
        })
    }

    async fn send(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
        let unreachable = |reason: String| FetchError::Unreachable {
            path: path.to_owned(),
            reason,
        };
        let req = axum::http::Request::get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key))
            .header(
                "user-agent",
                concat!("agentledger-monitor/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|_| unreachable("the URL is not usable".into()))?;
        tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| unreachable(format!("timed out after {:?}", self.timeout)))?
            .map_err(|e| unreachable(e.to_string()))
    }

    /// The body of a 200 answer, at most `limit` bytes; any other status is an error.
    pub async fn get(&self, path: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        let resp = self.send(path).await?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(
            self.timeout,
            Limited::new(resp.into_body(), limit).collect(),
        )
        .await
        .map_err(|_| FetchError::Unreachable {
            path: path.to_owned(),
            reason: format!("timed out after {:?}", self.timeout),
        })?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge {
                    path: path.to_owned(),
                    limit,
                }
            } else {
                FetchError::Unreachable {
                    path: path.to_owned(),
                    reason: e.to_string(),
                }
            }
        })?
        .to_bytes();
        if status != 200 {
            let message = String::from_utf8_lossy(&body);
            return Err(FetchError::Status {
                path: path.to_owned(),
                status,
                message: message.trim().chars().take(200).collect(),
            });
        }
        Ok(body.to_vec())
    }

    /// Reads a 200 answer line by line (each at most `max_line` bytes), handing each to
    /// `line` until it answers `false` or the body ends; the rest is not downloaded.
    pub async fn each_line(
        &self,
        path: &str,
        max_line: usize,
        mut line: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), FetchError> {
        let resp = self.send(path).await?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status {
                path: path.to_owned(),
                status,
                message: String::new(),
            });
        }
        let mut body = resp.into_body();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::time::timeout(self.timeout, body.frame())
                .await
                .map_err(|_| FetchError::Unreachable {
                    path: path.to_owned(),
                    reason: format!("timed out after {:?}", self.timeout),
                })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| FetchError::Unreachable {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let rest = pending.split_off(end + 1);
                if !line(&pending[..end]) {
                    return Ok(());
                }
                pending = rest;
            }
            if pending.len() > max_line {
                return Err(FetchError::TooLarge {
                    path: path.to_owned(),
                    limit: max_line,
                });
            }
        }
        if !pending.is_empty() {
            line(&pending);
        }
        Ok(())
    }
}
