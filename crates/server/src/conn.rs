//! Accepting connections with bounds a hostile client cannot outlast.
//!
//! `axum::serve` reads request headers without a deadline: a client sending
//! one header line a second held its connection (and a file descriptor)
//! forever, and ~20,000 of them exhausted the process's descriptors. Here
//! every connection is served by hyper's HTTP/1 server with a timer, so the
//! headers of each request (and the wait for the next request on an idle
//! keep-alive connection) must arrive within `header_timeout`; the number of
//! open connections is bounded in total and per client address, and a
//! connection over either bound is answered `503` with `Retry-After` and
//! closed at once, so a flood from one address leaves room for everyone
//! else (a health checker included). Shutdown is graceful: stop accepting,
//! let in-flight requests finish, close idle connections.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Bounds on connections (each a flag and an AGENTLEDGER_* variable).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Longest a client may take to send a request's headers, and longest a
    /// keep-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Open connections, in all.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_per_address: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_per_address: 256,
        }
    }
}

/// Connections open per client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One open connection's place in the per-address count.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

/// The key a client address is counted under: an IPv6 client usually holds
/// a whole /64, so its addresses count as one.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(std::net::Ipv6Addr::from(seg))
            }
        },
        v4 => v4,
    }
}

/// Refusals being answered at once, at most; beyond it a connection over
/// a bound is closed without an answer (each refusal holds a descriptor for
/// up to a second).
const MAX_REFUSALS: usize = 256;

impl PerAddress {
    fn take(table: &Arc<PerAddress>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let ip = client_key(ip);
        let mut m = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What a connection over a bound is told before it is closed: the error
/// envelope every route uses.
const BUSY_BODY: &str = r#"{"error":{"message":"too many open connections; retry shortly","type":"overloaded","code":"OVERLOADED","details":null}}"#;

fn busy() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{BUSY_BODY}",
        BUSY_BODY.len()
    )
    .into_bytes()
}

async fn refuse(mut stream: TcpStream) {
    // Best effort, bounded to a second and 16 KiB: let the client finish
    // its request head (an answer before the request confuses clients),
    // answer, close our side, then drain (closing with unread bytes would
    // reset the connection, and the client would see a reset, not the 503).
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(&busy()).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop
/// accepting and wait for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let total = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let per_address = Arc::new(PerAddress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before
                    // accept: not fatal; pause so the loop does not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let slot = PerAddress::take(&per_address, peer.ip(), limits.max_per_address);
        let permit: Option<OwnedSemaphorePermit> = total.clone().try_acquire_owned().ok();
        let (Some(slot), Some(permit)) = (slot, permit) else {
            if let Ok(r) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(r);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The peer's address rides with each request (the console's
        // sign-in throttle counts failures per address).
        let service = TowerToHyperService::new(tower_http::add_extension::AddExtension::new(
            router.clone(),
            axum::extract::ConnectInfo(peer),
        ));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _held = (slot, permit);
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(stop);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    // Every connection task holds a receiver until it ends.
    stop_tx.closed().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answer_is_well_formed() {
        let bytes = busy();
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "OVERLOADED");
    }

    #[test]
    fn address_slots_are_counted_and_released() {
        let t = Arc::new(PerAddress::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = PerAddress::take(&t, ip, 2).unwrap();
        let _b = PerAddress::take(&t, ip, 2).unwrap();
        assert!(PerAddress::take(&t, ip, 2).is_none());
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(PerAddress::take(&t, other, 2).is_some());
        drop(a);
        assert!(PerAddress::take(&t, ip, 2).is_some());
        // One IPv6 /64 is one client.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _x = PerAddress::take(&t, a, 1).unwrap();
        assert!(PerAddress::take(&t, b, 1).is_none());
        assert!(PerAddress::take(&t, "2001:db8:1:3::1".parse().unwrap(), 1).is_some());
    }
}
