//! agentledger benchmark harness: drives a real server process over HTTP from
//! this (separate) process and sets every figure beside the machine's own
//! ceiling measured in the same run. A release binary, not a test.
//!
//! `cargo run --release -p agentledger-bench -- [--scenario NAME[,NAME…]|all] [--events N] [--db-url postgres://…] [--json FILE]`

mod alerts;
mod ceiling;
mod chart;
mod events;
mod load;
mod pg;
mod quality;
mod queries;
mod report;
mod scenarios;
mod tlog;
mod verify_ceiling;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use report::Row;

#[derive(Parser)]
#[command(
    name = "agentledger-bench",
    about = "Benchmark agentledger against the machine's ceiling"
)]
struct Cli {
    #[command(subcommand)]
    child: Option<Child>,
    /// Scenarios to run, comma-separated: ceiling, batch, single, sweep,
    /// agentlens, fabraix, otlp, mix, policy, alerts, check, detectors, queries,
    /// log (the transparency log: integration lag, inclusion proofs),
    /// postgres and queries-postgres (need --db-url), console (the
    /// console's pages alone; see --console-db), or all.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Events for the batched scenarios (single-event scenarios use a quarter;
    /// the query dataset holds at least 1M, or this many if more).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Concurrent clients of the single-event scenario.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the chart of the concurrency sweep (SVG) to this file.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Drive this running server instead of starting one per scenario
    /// (needs --key; no cold start, RSS or disk figures then).
    #[arg(long, requires = "key")]
    url: Option<String>,
    /// Also run the PostgreSQL rows (scenario `postgres`, part of `all`)
    /// on this server, e.g. postgres://postgres@127.0.0.1:5432/test: each
    /// scenario creates a database of its own there and drops it after.
    #[arg(long)]
    db_url: Option<String>,
    /// Scenario `console`: keep its 1M-event ledger in this SQLite file (and
    /// its key beside it, `.key`) and reuse it when it exists, so pages can
    /// be timed again (by another build, after a migration) without a
    /// refill. Without it the ledger is filled in a temporary directory.
    #[arg(long)]
    console_db: Option<PathBuf>,
    /// An admin API key of the server given with --url.
    #[arg(long, env = "AGENTLEDGER_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Subcommand)]
enum Child {
    /// (internal) run the server for the load generator.
    #[command(hide = true)]
    ServeChild {
        #[arg(long)]
        db: String,
    },
}

/// The server's allocator (this binary runs the server as `serve-child`):
/// mimalloc, not glibc's malloc: the ingest path allocates on the request
/// tasks and frees on the store's writer thread (a request's parsed
/// payloads, judged there), which glibc serialises on its arenas' locks
/// (measured: `malloc_consolidate` and arena futexes in the writer's profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Child::ServeChild { db }) = cli.child {
        return load::serve_child(db);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), String> {
    let chosen: Vec<&str> = cli.scenario.split(',').map(str::trim).collect();
    let all = chosen.contains(&"all");
    let want = |s: &str| all || chosen.contains(&s);
    let known = [
        "all",
        "ceiling",
        "batch",
        "single",
        "sweep",
        "agentlens",
        "fabraix",
        "otlp",
        "mix",
        "policy",
        "alerts",
        "check",
        "detectors",
        "queries",
        "postgres",
        "queries-postgres",
        "console",
        "log",
    ];
    if let (Some(url), Some(key)) = (&cli.url, &cli.key) {
        load::use_external(url.clone(), key.clone());
    }
    let started = std::time::Instant::now();
    if let Some(unknown) = chosen.iter().find(|s| !known.contains(s)) {
        return Err(format!(
            "unknown scenario {unknown:?}; one of {}",
            known.join(", ")
        ));
    }
    if (chosen.contains(&"postgres") || chosen.contains(&"queries-postgres"))
        && cli.db_url.is_none()
    {
        return Err("scenarios postgres and queries-postgres need --db-url postgres://...".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rows: Vec<Row> = Vec::new();
    eprintln!(
        "machine: {} cores; database in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.path().display()
    );

    // The console's pages are timed alone (no ingest figure to compare).
    if chosen == ["console"] {
        let n = cli.events.max(1_000_000);
        let db = cli
            .console_db
            .clone()
            .unwrap_or_else(|| dir.path().join("console.db"));
        eprintln!("scenario console: the pages on a ledger of {n} events...");
        rows.extend(queries::console_only(&db, n).await?);
        report::print(&rows);
        if let Some(path) = &cli.json {
            report::write_json(path, &rows)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        return Ok(());
    }

    // Every figure is read against the ceiling, so it is always measured first.
    eprintln!(
        "measuring the ceiling (raw inserts of the same rows, same schema, same durability)..."
    );
    let ceiling =
        ceiling::measure(dir.path(), cli.events.min(200_000)).map_err(|e| e.to_string())?;
    rows.extend(ceiling.rows());
    let batch_ceiling = Some(ceiling.batch_rows_per_sec);

    if want("batch") {
        eprintln!("scenario batch: native batches of 1000 standard events...");
        let mut r = load::native_batches(dir.path(), cli.events, 1000, 4).await?;
        r[0] = r[0].clone().with_ceiling(batch_ceiling);
        rows.extend(r);
    }
    if want("single") {
        let n = (cli.events / 4).max(1000);
        eprintln!(
            "scenario single: {n} single-event requests from {} clients...",
            cli.clients
        );
        let r = load::native_singles(dir.path(), n, cli.clients).await?;
        rows.push(r.with_ceiling(batch_ceiling));
    }
    if let Some(admin) = cli.db_url.as_deref().filter(|_| want("postgres")) {
        rows.extend(postgres_rows(admin, cli.events, cli.clients).await?);
    }
    if want("sweep") {
        eprintln!("scenario sweep: single events at 1..256 clients...");
        let (r, points) = scenarios::singles_sweep(dir.path(), &[1, 4, 16, 64, 256]).await?;
        rows.extend(r);
        if let Some(path) = &cli.chart {
            let refs = [
                chart::Reference {
                    label: "raw insert, 1000-row txns",
                    per_sec: ceiling.batch_rows_per_sec,
                    color: "#cf222e",
                },
                chart::Reference {
                    label: "raw insert, 1 row per txn",
                    per_sec: ceiling.single_commits_per_sec,
                    color: "#9a6700",
                },
                chart::Reference {
                    label: "disk fdatasync",
                    per_sec: ceiling.fsync_per_sec,
                    color: "#6e7781",
                },
            ];
            let svg = chart::svg(
                &points,
                &refs,
                "Single durable events vs concurrency, with the machine's ceilings",
            );
            std::fs::write(path, svg)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    if want("agentlens") {
        eprintln!("scenario agentlens: AgentLens batches of 1000 standard events...");
        let r = load::agentlens_batches(dir.path(), cli.events, 1000, 4).await?;
        rows.push(r.with_ceiling(batch_ceiling));
    }
    if want("fabraix") {
        let n = (cli.events / 4).max(1000);
        eprintln!(
            "scenario fabraix: {n} schema-validated Fabraix events from {} clients...",
            cli.clients
        );
        let r = load::fabraix_singles(dir.path(), n, cli.clients).await?;
        rows.push(r.with_ceiling(batch_ceiling));
    }
    if want("otlp") {
        eprintln!("scenario otlp: OTLP protobuf batches of 512 GenAI spans...");
        let r = load::otlp_batches(dir.path(), cli.events, 512, 4).await?;
        rows.push(r.with_ceiling(batch_ceiling));
    }
    if want("mix") {
        eprintln!("scenario mix: the realistic mix in native batches of 100...");
        let r = scenarios::mixed_batches(dir.path(), cli.events, 100, 8).await?;
        rows.push(r.with_ceiling(batch_ceiling));
    }
    if want("policy") {
        eprintln!("scenario policy: native batches of 1000 with the policy checkpoint off...");
        let mut r = load::native_batches_with(dir.path(), cli.events, 1000, 4, false).await?;
        rows.push(r.remove(0).with_ceiling(batch_ceiling));
        if !all {
            eprintln!("scenario policy: ... and with the default policy set...");
            let mut r = load::native_batches(dir.path(), cli.events, 1000, 4).await?;
            rows.push(r.remove(0).with_ceiling(batch_ceiling));
        }
    }
    if want("alerts") {
        eprintln!("scenario alerts: native batches of 1000 with 50 silent alert rules...");
        let r = alerts::batches_with_rules(dir.path(), cli.events, 1000, 4).await?;
        rows.push(r.with_ceiling(batch_ceiling));
    }
    if want("check") {
        let n = (cli.events / 20).clamp(1000, 20_000);
        eprintln!("scenario check: {n} action checks at 1000/s...");
        rows.push(load::action_checks(dir.path(), n, 1000).await?);
    }
    if want("detectors") {
        eprintln!("scenario detectors: precision and recall over the labelled corpus...");
        rows.extend(quality::detector_quality(dir.path()).await?);
    }
    if want("log") {
        eprintln!("scenario log: batched ingest, then every event in a signed checkpoint...");
        rows.extend(tlog::log_rows(dir.path(), cli.events).await?);
    }
    if want("queries") {
        let n = cli.events.max(1_000_000);
        eprintln!("scenario queries: a ledger of {n} events...");
        rows.extend(queries::queries(dir.path(), n).await?);
    }
    if let Some(admin) = cli.db_url.as_deref().filter(|_| want("queries-postgres")) {
        let n = cli.events.max(1_000_000);
        eprintln!("scenario queries-postgres: a ledger of {n} events on PostgreSQL...");
        rows.extend(queries::queries_postgres(admin, n).await?);
    }
    report::print(&rows);
    eprintln!("\nwhole run: {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &cli.json {
        report::write_json(path, &rows)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The PostgreSQL rows: the raw ceiling first, then batched and single
/// ingest with one node and with two nodes on one database.
async fn postgres_rows(admin: &str, events: u64, clients: usize) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    eprintln!("postgres: measuring the ceiling (raw INSERT … unnest, 1000-row txns)...");
    let ceiling = pg::ceiling(admin, events.min(200_000)).await?;
    let c = Some(ceiling.batch_per_sec());
    rows.extend(ceiling.rows());
    for nodes in [1, 2] {
        eprintln!("postgres: native batches of 1000, 4 clients, {nodes} node(s)...");
        rows.push(
            pg::batches(admin, events, 1000, 4, nodes)
                .await?
                .with_ceiling(c),
        );
    }
    let n = (events / 4).max(1000);
    for nodes in [1, 2] {
        eprintln!("postgres: {n} single-event requests, {clients} clients, {nodes} node(s)...");
        rows.push(pg::singles(admin, n, clients, nodes).await?.with_ceiling(c));
    }
    Ok(rows)
}
