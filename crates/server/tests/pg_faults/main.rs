//! Faults of a deployment on PostgreSQL, with real processes (issue 15):
//! two nodes on one database, a node SIGKILLed, PostgreSQL restarted, and a
//! failover to a synchronous standby. Clients post through every node while
//! the fault happens; afterwards every acknowledged event must be stored
//! once, as acknowledged, in gapless chains that verify through every node,
//! and nothing refused may be stored.
//!
//! Slow and destructive (they stop and kill PostgreSQL servers of their own),
//! so they are `#[ignore]`d and run by `.ci/run`:
//! `AGENTLEDGER_REQUIRE_PG=1 cargo test -p agentledger --test pg_faults -- --ignored --test-threads=1 --nocapture`.
//! They need root (private clusters run as user `postgres` via `runuser`)
//! and the PostgreSQL 15 server binaries.

mod cluster;
mod load;
mod node;

use std::time::{Duration, Instant};

use cluster::{Cluster, SharedDb};
use load::{Load, check, longest_ack_gap};
use node::Node;

const CLIENTS: usize = 8;
const SESSIONS: usize = 6;

async fn sleep(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

/// Wait until every node acknowledged something sent after `since`; returns
/// how long after `since` the last of them did.
async fn all_ack_again(load: &Load, nodes: &[&Node], since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(60);
    loop {
        if nodes.iter().all(|n| load.acks_since(&n.base, since) > 0) {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "a node did not take appends again within 60 s"
        );
        sleep(0.05).await;
    }
}

fn bases(nodes: &[&Node]) -> Vec<String> {
    nodes.iter().map(|n| n.base.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "process-level PostgreSQL faults: run by .ci/run"]
async fn two_nodes_on_one_database_keep_every_chain_whole() {
    let db = SharedDb::new();
    let logs = tempfile::tempdir().expect("temp dir");
    let key = agentledger_core::keys::generate_key();
    // One after the other: the first creates the schema and the key.
    let a = Node::start("node-a", &db.url, &key, logs.path()).await;
    let b = Node::start("node-b", &db.url, &key, logs.path()).await;
    let bases = bases(&[&a, &b]);
    let load = Load::start(&bases, &key, CLIENTS, SESSIONS);
    sleep(8.0).await;
    let ledger = load.finish().await;
    for n in [&a, &b] {
        let acks = ledger.ack_times.get(&n.base).map_or(0, Vec::len);
        assert!(acks > 0, "{} acknowledged nothing", n.name);
    }
    let r = check(&bases, &key, SESSIONS, &ledger).await;
    assert!(r.acked > 100, "too little load to mean anything: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "process-level PostgreSQL faults: run by .ci/run"]
async fn a_node_sigkilled_under_load_loses_nothing_acknowledged() {
    let db = SharedDb::new();
    let logs = tempfile::tempdir().expect("temp dir");
    let key = agentledger_core::keys::generate_key();
    let mut a = Node::start("node-a", &db.url, &key, logs.path()).await;
    let b = Node::start("node-b", &db.url, &key, logs.path()).await;
    let bases = bases(&[&a, &b]);
    let load = Load::start(&bases, &key, CLIENTS, SESSIONS);
    for _ in 0..2 {
        sleep(2.5).await;
        a.kill();
        let before = load.acked();
        sleep(1.5).await;
        assert!(
            load.acked() > before,
            "node-b went on while node-a was dead"
        );
        a.restart().await;
    }
    let back = Instant::now();
    all_ack_again(&load, &[&a, &b], back).await;
    sleep(1.5).await;
    let ledger = load.finish().await;
    let r = check(&bases, &key, SESSIONS, &ledger).await;
    println!(
        "killed node-a twice; requests cut off unanswered: {}",
        r.unknown_requests
    );
    assert!(r.acked > 100, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "process-level PostgreSQL faults: run by .ci/run"]
async fn postgresql_restarted_under_load_nodes_answer_503_then_carry_on() {
    let root = Cluster::root();
    let pg = Cluster::init(root.path(), "main");
    pg.psql("postgres", "CREATE DATABASE ledger");
    let url = pg.url("ledger");
    let logs = tempfile::tempdir().expect("temp dir");
    let key = agentledger_core::keys::generate_key();
    let a = Node::start("node-a", &url, &key, logs.path()).await;
    let b = Node::start("node-b", &url, &key, logs.path()).await;
    let bases = bases(&[&a, &b]);
    let load = Load::start(&bases, &key, CLIENTS, SESSIONS);
    sleep(3.0).await;
    let down = Instant::now();
    pg.stop_immediate();
    sleep(4.0).await;
    let refused_while_down = load.ledger.lock().expect("ledger").refused.len();
    pg.start();
    let up = Instant::now();
    let reconnect = all_ack_again(&load, &[&a, &b], up).await;
    sleep(2.0).await;
    let ledger = load.finish().await;
    let r = check(&bases, &key, SESSIONS, &ledger).await;
    println!(
        "PostgreSQL down {:.1} s (stop -m immediate .. start returned); both nodes acked again \
         {:.2} s after; longest gap between acks: node-a {:.1} s, node-b {:.1} s; \
         requests refused 503 while down: {refused_while_down}",
        (up - down).as_secs_f64(),
        reconnect.as_secs_f64(),
        longest_ack_gap(&ledger, &a.base).as_secs_f64(),
        longest_ack_gap(&ledger, &b.base).as_secs_f64(),
    );
    assert!(refused_while_down > 0, "no 503 while the database was down");
    assert!(r.acked > 100, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "process-level PostgreSQL faults: run by .ci/run"]
async fn failover_to_a_synchronous_standby_keeps_every_acknowledged_event() {
    let root = Cluster::root();
    let primary = Cluster::init(root.path(), "primary");
    primary.psql("postgres", "CREATE DATABASE ledger");
    let standby = Cluster::standby_of(&primary, root.path(), "standby");
    // Synchronous from now on: a COMMIT returns once the standby has it.
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = 'standby'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    primary.wait_for(
        "postgres",
        "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'",
        "sync",
    );
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/ledger?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let logs = tempfile::tempdir().expect("temp dir");
    let key = agentledger_core::keys::generate_key();
    let a = Node::start("node-a", &url, &key, logs.path()).await;
    let b = Node::start("node-b", &url, &key, logs.path()).await;
    let bases = bases(&[&a, &b]);
    let load = Load::start(&bases, &key, CLIENTS, SESSIONS);
    sleep(3.0).await;
    let acked_before = load.acked();
    let killed = Instant::now();
    primary.kill_postmaster();
    sleep(1.0).await;
    standby.promote();
    let promoted = Instant::now();
    let reconnect = all_ack_again(&load, &[&a, &b], promoted).await;
    sleep(2.0).await;
    let ledger = load.finish().await;
    standby.wait_for("ledger", "SELECT pg_is_in_recovery()::text", "false");
    let r = check(&bases, &key, SESSIONS, &ledger).await;
    println!(
        "primary SIGKILLed with {acked_before} events acked; standby promoted {:.1} s later; \
         both nodes acked again {:.2} s after the promotion; longest gap between acks: \
         node-a {:.1} s, node-b {:.1} s",
        (promoted - killed).as_secs_f64(),
        reconnect.as_secs_f64(),
        longest_ack_gap(&ledger, &a.base).as_secs_f64(),
        longest_ack_gap(&ledger, &b.base).as_secs_f64(),
    );
    assert!(r.acked > acked_before, "nothing acked after the failover");
}
