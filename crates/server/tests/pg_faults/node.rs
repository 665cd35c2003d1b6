//! An agentledger node: the real binary in a process of its own, on a port it
//! keeps across restarts, its log in a file printed when a test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::free_port;

pub struct Node {
    pub name: &'static str,
    pub base: String,
    port: u16,
    db: String,
    key: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Start a node on `db` and wait until it answers.
    pub async fn start(name: &'static str, db: &str, key: &str, logs: &std::path::Path) -> Node {
        let port = free_port();
        let mut n = Node {
            name,
            base: format!("http://127.0.0.1:{port}"),
            port,
            db: db.to_owned(),
            key: key.to_owned(),
            log: logs.join(format!("{name}.log")),
            child: None,
        };
        n.spawn().await;
        n
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_agentledger"))
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--db", &self.db, "--log", "warn"])
            .env("AGENTLEDGER_BOOTSTRAP_KEY", &self.key)
            .env("AGENTLEDGER_OPERATOR_TOKEN", &self.key)
            // The nodes of one deployment share the log's signing key (beside their logs).
            .env("AGENTLEDGER_LOG_KEY", self.log.with_file_name("log.key"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .is_err()
        {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited ({status}): {}", self.name, self.log_text());
            }
            assert!(Instant::now() < deadline, "{} did not start", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown, no flush, whatever it held is cut off.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and database.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log_text());
        }
    }
}
