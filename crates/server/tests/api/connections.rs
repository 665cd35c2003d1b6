//! Finding 6 of issue 13: a client sending one header line a second kept its
//! connection open forever, and enough of them exhausted the server's file
//! descriptors. Headers now have a deadline and connections are bounded in
//! all and per client address, with /healthz still answering.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use agentledger::conn::ConnLimits;

use crate::helpers::*;

fn addr(app: &TestApp) -> SocketAddr {
    app.base
        .trim_start_matches("http://")
        .parse()
        .expect("socket address")
}

/// Drip one header line every 200 ms; the server must close the connection.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = spawn_app_with(|c| {
        c.connections = ConnLimits {
            header_timeout: Duration::from_secs(1),
            ..ConnLimits::default()
        }
    })
    .await;
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    // Bounded: 100 lines (20 s) would be far past the 1 s deadline.
    for i in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(format!("X-Drip-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            // hyper may answer 408 before closing; either way it is over.
            Ok(Ok(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "the connection was still open after {:?}",
        started.elapsed()
    );
}

/// Open `n` idle connections from 127.0.0.1.
async fn hold(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        let s = TcpStream::connect(addr(app)).await.unwrap();
        // A partial request: the connection is now busy with headers.
        let mut s = s;
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        v.push(s);
    }
    v
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let app = spawn_app_with(|c| {
        c.connections = ConnLimits {
            header_timeout: Duration::from_secs(30),
            max_connections: 100,
            max_per_address: 20,
        }
    })
    .await;
    let _held = hold(&app, 20).await;
    // The 21st connection from the same address is told to retry.
    let mut s = TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer)).await;
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("Retry-After: 1"),
        "{answer:?}"
    );
    // Another address (a health checker) still gets through.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let client = reqwest::Client::builder()
        .local_address(other)
        .build()
        .unwrap();
    let r = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn the_total_is_bounded_too() {
    let app = spawn_app_with(|c| {
        c.connections = ConnLimits {
            header_timeout: Duration::from_secs(30),
            max_connections: 10,
            max_per_address: 100,
        }
    })
    .await;
    let held = hold(&app, 10).await;
    let r = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    // Closing them frees the places.
    drop(held);
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(app.url("/healthz")).await
            && r.status() == reqwest::StatusCode::OK
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "connections were not released");
}
