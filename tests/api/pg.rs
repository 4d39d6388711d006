//! Postgres for the tests, with nothing to set up beforehand.
//!
//! `GATEHOUSE_TEST_POSTGRES_URL` (a superuser URL) is used when set. Otherwise the
//! first test that needs Postgres starts ONE throwaway cluster for the whole test
//! process from the system binaries (`/usr/lib/postgresql/<newest>/bin`, else
//! `PATH`): `initdb` into a temp dir, then `postgres` itself as a child process,
//! durability off (a test database is disposable), on 127.0.0.1 and a free port,
//! its socket in the data dir. As root, both run as the `postgres` user.
//!
//! Stopping it when the test process ends, however it ends: `postgres` is started
//! through `setpriv --pdeathsig KILL` (util-linux), so the kernel kills it when
//! its parent dies; the backends then exit on postmaster death. The death signal
//! fires when the parent *thread* exits, and libtest ends each test's thread, so
//! the child is spawned from a keeper thread that lives as long as the child.
//! setpriv sets the signal after switching user (checked: a uid change would
//! otherwise clear it). Statics are never dropped, so the data dir of a killed
//! cluster is removed by the next test run (dirs are named after the owning pid).
//!
//! Every test gets its own database (`CREATE DATABASE test_<uuid>`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection;

/// Room for every parallel test's pool (each app keeps at most a handful).
const MAX_CONNECTIONS: &str = "300";

/// A URL to a new, empty database on the tests' Postgres.
pub async fn fresh_database_url() -> String {
    let admin = match std::env::var("GATEHOUSE_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => shared_cluster().url("postgres"),
    };
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test cluster");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create the test database");
    conn.close().await.ok();
    let mut url = url::Url::parse(&admin).expect("postgres URL");
    url.set_path(&format!("/{name}"));
    url.into()
}

fn shared_cluster() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(Cluster::start)
}

/// A Postgres cluster owned by the tests. The shared one lives in a static and is
/// killed with the process; one that a test owns is stopped and removed on drop.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Keep Postgres' durability settings (fsync, synchronous commit): for
    /// benchmarks, whose figures must mean something in production.
    durable: bool,
}

impl Cluster {
    /// Initialises and starts a new cluster with durability off (test data is
    /// disposable); panics with the server log if it cannot.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A cluster with Postgres' default durability, for measurements.
    #[allow(
        dead_code,
        reason = "used by benches/load, which includes this file; the api tests do not"
    )]
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        let bin = bin_dir();
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let base = std::env::temp_dir().join("gatehouse-test-pg");
        std::fs::create_dir_all(&base).expect("cluster base dir");
        remove_stale_clusters(&base);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(&base)
            .expect("cluster dir")
            .keep();
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        }
        let cluster = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
            durable,
        };
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]));
        cluster.run_server();
        cluster
    }

    /// A superuser URL for `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Fast shutdown, as an operator's `pg_ctl stop` does: clients are disconnected.
    pub fn stop(&self) {
        run(self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w"]));
    }

    /// Starts the server again on the same data and port, and waits until it is ready.
    pub fn run_server(&self) {
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL"]);
        if self.as_postgres {
            command.args([
                "--reuid",
                "postgres",
                "--regid",
                "postgres",
                "--init-groups",
            ]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("server log");
        command
            .arg("--")
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")]);
        if !self.durable {
            command
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log);
        let (started, spawned) = std::sync::mpsc::channel();
        std::thread::spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = started.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = started.send(Err(e));
            }
        });
        spawned
            .recv()
            .expect("keeper thread")
            .expect("spawn setpriv postgres");
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "postgres did not start within 60 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command for one of the cluster's binaries, as the user that owns the cluster.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid",
                    "postgres",
                    "--regid",
                    "postgres",
                    "--init-groups",
                ])
                .arg("--")
                .arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or wherever `initdb` is on `PATH`.
fn bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists())
        .expect("PostgreSQL server binaries: apt-get install postgresql, or set GATEHOUSE_TEST_POSTGRES_URL")
}

/// Removes clusters left by test processes that no longer run.
fn remove_stale_clusters(base: &Path) {
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let owner = name.to_str().and_then(|n| n.split('-').next());
        if let Some(pid) = owner
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
