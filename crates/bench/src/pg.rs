//! The PostgreSQL rows (`--db-url`): every scenario gets a database of its
//! own, created on the server `--db-url` names and dropped afterwards; the
//! raw PostgreSQL ceiling is measured in the same run on the same schema
//! (the store's own migration) with the writer's own INSERT statement.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_postgres::NoTls;

use agentledger_store::EventStore;
use agentledger_store::postgres::{INSERT_EVENTS_SQL, PostgresOptions, PostgresStore};

use crate::events::{STANDARD_METADATA, batch_body, standard_event, standard_payload};
use crate::load::{NATIVE, Server, drive_many};
use crate::report::Row;

const SESSIONS: u64 = 100;

/// `url` with its database replaced by `db` (host list and parameters kept).
fn with_database(url: &str, db: &str) -> Result<String, String> {
    let start = url
        .find("://")
        .ok_or_else(|| format!("--db-url is not a postgres:// URL: {url:?}"))?
        + 3;
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let end = head[start..].find('/').map_or(head.len(), |i| start + i);
    Ok(format!("{}/{db}{query}", &head[..end]))
}

/// The server's message if there is one ("db error" alone says nothing).
fn pg_err(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// A database of one scenario's own; `remove` drops it.
pub struct Database {
    admin: String,
    name: String,
    pub url: String,
}

impl Database {
    pub async fn create(admin: &str, scenario: &str) -> Result<Database, String> {
        let name = format!("agentledger_bench_{}_{scenario}", std::process::id());
        let client = connect(admin).await?;
        // Two statements: DROP/CREATE DATABASE refuse a transaction block.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{sql}: {}", pg_err(&e)))?;
        }
        Ok(Database {
            admin: admin.to_owned(),
            url: with_database(admin, &name)?,
            name,
        })
    }

    /// Size on disk of the whole database (tables, indexes, TOAST).
    pub async fn size(&self) -> Result<u64, String> {
        let client = connect(&self.url).await?;
        let row = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    pub async fn remove(self) -> Result<(), String> {
        let client = connect(&self.admin).await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .map_err(|e| format!("cannot drop database {}: {e}", self.name))
    }
}

pub struct Ceiling {
    pub rows: u64,
    pub batch_seconds: f64,
    pub single: u64,
    pub single_seconds: f64,
}

impl Ceiling {
    pub fn batch_per_sec(&self) -> f64 {
        self.rows as f64 / self.batch_seconds
    }

    pub fn rows(&self) -> Vec<Row> {
        vec![
            Row::throughput(
                "pg ceiling: raw insert, 1000-row txns",
                self.rows,
                self.batch_seconds,
                None,
            )
            .note("store's schema and INSERT … unnest, synchronous_commit=on; no HTTP/JSON/hash/head update"),
            Row::throughput(
                "pg ceiling: raw insert, 1 row per txn",
                self.single,
                self.single_seconds,
                None,
            )
            .note("one client, synchronous_commit=on"),
        ]
    }
}

/// Insert `n` rows per transaction, `rows` in all, as the writer's
/// statement would (stand-in hashes, the SQLite ceiling's values).
async fn insert_rows(
    client: &mut tokio_postgres::Client,
    refs: &[i64],
    project: i64,
    rows: u64,
    per_txn: u64,
    payloads: &[String],
) -> Result<f64, String> {
    let stmt = client
        .prepare(INSERT_EVENTS_SQL)
        .await
        .map_err(|e| e.to_string())?;
    let mut seq = vec![0i64; refs.len()];
    let mut next = 0u64;
    let started = Instant::now();
    while next < rows {
        let n = (rows - next).min(per_txn);
        let mut ids = Vec::with_capacity(n as usize);
        let mut hashes = Vec::with_capacity(n as usize);
        let (mut srefs, mut seqs, mut ts, mut pay) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for k in 0..n {
            let i = next + k;
            let s = (i % refs.len() as u64) as usize;
            seq[s] += 1;
            let mut id = vec![0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            id[8..].copy_from_slice(&(i ^ 0x5a5a_5a5a).to_le_bytes());
            let mut h = vec![7u8; 32];
            h[..8].copy_from_slice(&i.to_le_bytes());
            ids.push(id);
            hashes.push(h);
            srefs.push(refs[s]);
            seqs.push(seq[s]);
            ts.push(1_700_000_000_000_000i64 + i as i64);
            pay.push(payloads[(i % payloads.len() as u64) as usize].as_str());
        }
        let m = n as usize;
        let projects = vec![project; m];
        let agents = vec!["bench-agent"; m];
        let kinds = vec![5i16; m];
        let sources = vec!["tool_call"; m];
        let dialects = vec![0i16; m];
        let severities = vec![1i16; m];
        let client_ts: Vec<Option<i64>> = vec![None; m];
        let metadata = vec![STANDARD_METADATA; m];
        let none_text: Vec<Option<&str>> = vec![None; m];
        let none_int: Vec<Option<i64>> = vec![None; m];
        let none_f: Vec<Option<f64>> = vec![None; m];
        let envelope = vec![2i32; m];
        let none_small: Vec<Option<i16>> = vec![None; m];
        let none_bytes: Vec<Option<Vec<u8>>> = vec![None; m];
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        tx.execute(
            &stmt,
            &[
                &ids,
                &projects,
                &srefs,
                &seqs,
                &agents,
                &kinds,
                &sources,
                &dialects,
                &severities,
                &client_ts,
                &ts,
                &pay,
                &metadata,
                &hashes,
                &hashes,
                &hashes,
                &none_text,
                &none_int,
                &none_int,
                &none_f,
                &envelope,
                &none_text,
                &none_small,
                &none_bytes,
                &none_bytes,
            ],
        )
        .await
        .map_err(|e| format!("ceiling insert: {}", pg_err(&e)))?;
        tx.commit().await.map_err(|e| e.to_string())?;
        next += n;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One fresh, migrated database with a project and 100 sessions; the
/// session refs and the project id.
async fn prepared(
    admin: &str,
    name: &str,
) -> Result<(Database, tokio_postgres::Client, Vec<i64>, i64), String> {
    let db = Database::create(admin, name).await?;
    let store = PostgresStore::open(PostgresOptions::new(db.url.clone()))
        .await
        .map_err(|e| format!("cannot migrate {}: {e}", db.url))?;
    store.close().await;
    drop(store);
    let client = connect(&db.url).await?;
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(|e| e.to_string())?;
    let project: i64 = client
        .query_one(
            "INSERT INTO projects (name, created_at) VALUES ('bench', 0) RETURNING id",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let mut refs = Vec::new();
    for s in 0..SESSIONS {
        let r: i64 = client
            .query_one(
                "INSERT INTO sessions (project_id, id, agent_id, metadata, created_at)
                 VALUES ($1, $2, 'bench-agent', '{}', 0) RETURNING ref",
                &[&project, &format!("bench-{s}")],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        refs.push(r);
    }
    Ok((db, client, refs, project))
}

pub async fn ceiling(admin: &str, rows: u64) -> Result<Ceiling, String> {
    let payloads: Vec<String> = (0..1000).map(standard_payload).collect();
    let (db, mut client, refs, project) = prepared(admin, "ceiling").await?;
    let batch_seconds = insert_rows(&mut client, &refs, project, rows, 1000, &payloads).await?;
    drop(client);
    db.remove().await?;
    let single = 2_000;
    let (db, mut client, refs, project) = prepared(admin, "ceiling_single").await?;
    let single_seconds = insert_rows(&mut client, &refs, project, single, 1, &payloads).await?;
    drop(client);
    db.remove().await?;
    Ok(Ceiling {
        rows,
        batch_seconds,
        single,
        single_seconds,
    })
}

/// Start `nodes` servers on one fresh database (one after the other: the
/// first creates the bootstrap key, the others find it).
async fn start_nodes(
    admin: &str,
    name: &str,
    nodes: usize,
) -> Result<(Database, Vec<Server>), String> {
    let db = Database::create(admin, name).await?;
    let key = agentledger_core::keys::generate_key();
    let mut servers = Vec::new();
    for _ in 0..nodes {
        match Server::spawn_db(db.url.clone(), key.clone(), true) {
            Ok(s) => servers.push(s),
            Err(e) => {
                for s in servers {
                    let _ = s.stop();
                }
                let _ = db.remove().await;
                return Err(e);
            }
        }
    }
    Ok((db, servers))
}

async fn stop_nodes(db: Database, servers: Vec<Server>) -> Result<Option<f64>, String> {
    let mut peak = None::<f64>;
    let mut failed = None;
    for s in servers {
        match s.stop() {
            Ok(st) => {
                peak = match (peak, st.peak_rss_mb) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            }
            Err(e) => failed = Some(e),
        }
    }
    db.remove().await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(peak),
    }
}

/// Native batches of `batch` over 100 sessions, `clients` clients split
/// evenly across `nodes` servers on one database.
pub async fn batches(
    admin: &str,
    events: u64,
    batch: u64,
    clients: usize,
    nodes: usize,
) -> Result<Row, String> {
    let (db, servers) = start_nodes(admin, &format!("batch{nodes}"), nodes).await?;
    let requests = events.div_ceil(batch);
    let bodies: Vec<Bytes> = (0..requests.min(16))
        .map(|k| Bytes::from(batch_body(k * batch, batch, SESSIONS)))
        .collect();
    let bytes = bodies[0].len() as u64 * requests;
    let refs: Vec<&Server> = servers.iter().collect();
    let cpu = CpuBusy::start();
    let driven = drive_many(&refs, NATIVE, Arc::new(bodies), requests, clients).await;
    let busy = cpu.percent();
    let size = db.size().await;
    let peak = stop_nodes(db, servers).await?;
    let (elapsed, lat) = driven?;
    let n = requests * batch;
    let mut row = Row::throughput(
        &format!("pg: native batches of {batch}, {clients} clients, {nodes} node(s)"),
        n,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note(&format!(
        "latency is per 1000-event request; default policy set; one PostgreSQL; machine CPU busy {busy}"
    ));
    row.peak_rss_mb = peak;
    row.disk_bytes_per_event = size.ok().map(|b| b as f64 / n as f64);
    Ok(row)
}

/// Single-event requests from `clients` clients split across `nodes` servers.
pub async fn singles(
    admin: &str,
    events: u64,
    clients: usize,
    nodes: usize,
) -> Result<Row, String> {
    let (db, servers) = start_nodes(admin, &format!("single{nodes}"), nodes).await?;
    let bodies: Vec<Bytes> = (0..1024)
        .map(|i| Bytes::from(format!(r#"{{"events":[{}]}}"#, standard_event(i, SESSIONS))))
        .collect();
    let bytes = bodies[0].len() as u64 * events;
    let refs: Vec<&Server> = servers.iter().collect();
    let cpu = CpuBusy::start();
    let driven = drive_many(&refs, NATIVE, Arc::new(bodies), events, clients).await;
    let busy = cpu.percent();
    let peak = stop_nodes(db, servers).await?;
    let (elapsed, lat) = driven?;
    let mut row = Row::throughput(
        &format!("pg: native single events, {clients} clients, {nodes} node(s)"),
        events,
        elapsed.as_secs_f64(),
        Some(bytes),
    )
    .latencies(lat)
    .note(&format!(
        "every ack committed (group commit per node); machine CPU busy {busy}"
    ));
    row.peak_rss_mb = peak;
    Ok(row)
}

/// How busy the machine's CPUs were over a run (all processes: the
/// nodes, PostgreSQL and the load generator share them), from /proc/stat:
/// what bounds a row when a second node adds little.
struct CpuBusy(Option<(u64, u64)>);

fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

impl CpuBusy {
    fn start() -> CpuBusy {
        CpuBusy(cpu_times())
    }

    fn percent(&self) -> String {
        match (self.0, cpu_times()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                format!("{:.0}%", 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64)
            }
            _ => "unknown".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_is_replaced_keeping_hosts_and_parameters() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database(
                "postgres://u@a:1,b:2/db?target_session_attrs=read-write",
                "x"
            )
            .unwrap(),
            "postgres://u@a:1,b:2/x?target_session_attrs=read-write"
        );
        assert_eq!(
            with_database("postgres://u@h", "x").unwrap(),
            "postgres://u@h/x"
        );
    }
}
