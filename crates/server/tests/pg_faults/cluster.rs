//! PostgreSQL servers a test owns: a fresh database on the shared server
//! (for faults that spare the database), or a private cluster under a
//! temporary directory (for faults that stop, kill or promote one), run as
//! user `postgres` with the PostgreSQL 15 binaries. Every guard stops and
//! removes what it made when dropped, also when the test panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A PostgreSQL tool run as user `postgres` (the server refuses to run as root).
fn as_postgres(tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--", &format!("{BIN}/{tool}")]);
    c
}

pub fn psql(url: &str, sql: &str) -> String {
    let out = run(Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A fresh database on the shared server (127.0.0.1:5432, or
/// AGENTLEDGER_TEST_PG); dropped with the guard.
pub struct SharedDb {
    pub url: String,
    name: String,
    admin: String,
}

impl SharedDb {
    pub fn new() -> SharedDb {
        let admin = std::env::var("AGENTLEDGER_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("agentledger_faults_{}", std::process::id()) + &suffix();
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        SharedDb {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }
}

fn suffix() -> String {
    agentledger_core::EventId::generate(agentledger_core::Micros::now())
        .to_string()
        .to_lowercase()
}

impl Drop for SharedDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin.as_str(),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A private PostgreSQL 15 cluster on its own port, its data, socket and log
/// under `root`.
pub struct Cluster {
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Cluster {
    /// A temporary directory the `postgres` user may write in.
    pub fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        run(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path()));
        dir
    }

    fn at(root: &Path, name: &str, port: u16) -> Cluster {
        Cluster {
            port,
            data: root.join(name),
            log: root.join(format!("{name}.log")),
        }
    }

    /// `initdb`, configured for this machine (small memory, this port,
    /// durability at the defaults: fsync and synchronous_commit on), started.
    pub fn init(root: &Path, name: &str) -> Cluster {
        let c = Cluster::at(root, name, free_port());
        run(as_postgres("initdb")
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&c.data));
        c.conf(&format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             shared_buffers = 32MB\nmax_connections = 60\nwal_level = replica\n\
             max_wal_senders = 4\nfsync = on\nsynchronous_commit = on\n",
            c.port,
            root.display()
        ));
        c.start();
        c
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), on its own port, started.
    pub fn standby_of(primary: &Cluster, root: &Path, name: &str) -> Cluster {
        let c = Cluster::at(root, name, free_port());
        run(as_postgres("pg_basebackup")
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
            .arg(&c.data));
        // Later lines win: this port, and the name the primary lists.
        c.conf(&format!("port = {}\ncluster_name = '{name}'\n", c.port));
        c.start();
        c
    }

    fn conf(&self, lines: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("postgresql.conf");
        f.write_all(lines.as_bytes()).expect("write conf");
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn psql(&self, db: &str, sql: &str) -> String {
        psql(&self.url(db), sql)
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = as_postgres("pg_ctl");
        c.arg("-D").arg(&self.data).args(args);
        c
    }

    pub fn start(&self) {
        run(self
            .pg_ctl(&["-w", "-t", "60", "-l"])
            .arg(&self.log)
            .arg("start"));
    }

    /// Stop as a crash would (`-m immediate`: no checkpoint, clients cut off).
    pub fn stop_immediate(&self) {
        run(&mut self.pg_ctl(&["-w", "-m", "immediate", "stop"]));
    }

    /// SIGKILL the postmaster; its backends notice and exit on their own.
    pub fn kill_postmaster(&self) {
        let pid = self.postmaster_pid().expect("postmaster running");
        run(Command::new("kill").args(["-9", &pid.to_string()]));
    }

    fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn promote(&self) {
        run(&mut self.pg_ctl(&["-w", "-t", "60", "promote"]));
    }

    /// Wait until `sql` (run on `db`) answers `want`.
    pub fn wait_for(&self, db: &str, sql: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = Command::new("psql")
                .args([self.url(db).as_str(), "-qAtc", sql])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{sql}: {got:?}, not {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl(&["-w", "-t", "20", "-m", "immediate", "stop"])
            .output();
        if let Some(pid) = self.postmaster_pid() {
            // A killed postmaster leaves its pid file; the pid may be reused,
            // so kill only a postgres process.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
        }
    }
}
