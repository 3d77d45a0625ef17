//! What one test run needs from outside, provisioned once and accounted
//! for at its end.
//!
//! A run is one `cargo test` (the test binaries' common parent; a test
//! binary started by hand is a run of its own). Its state lives in a
//! directory under the system's temporary directory: the throwaway
//! PostgreSQL cluster and `redis-server` the first test that needs them
//! starts (when `KEYWARD_TEST_POSTGRES_URL` / `KEYWARD_TEST_REDIS_URL` are
//! unset and the binaries are installed), and one line per test that used
//! or missed an outside piece. A watcher process started with the run
//! stops those servers when the run ends and prints one summary line:
//! what ran with what, what was skipped and why, and the `apt-get install`
//! line that would have run it. Under `CI=true` a skip fails its test.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// An outside piece some tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Piece {
    Postgres,
    Redis,
    Chromium,
    GnuPg,
    Nginx,
    Wrk,
    Python,
    /// pure-ftpd and pure-authd.
    PureFtpd,
    /// bash, curl, jq and gpg, which the README's examples use.
    Shell,
}

impl Piece {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Piece::Postgres => "PostgreSQL",
            Piece::Redis => "Redis",
            Piece::Chromium => "Chromium",
            Piece::GnuPg => "GnuPG",
            Piece::Nginx => "nginx",
            Piece::Wrk => "wrk",
            Piece::Python => "Python authlib/PyJWT",
            Piece::PureFtpd => "pure-ftpd",
            Piece::Shell => "the README's shell tools",
        }
    }

    /// The Debian packages that provide it.
    pub fn packages(self) -> &'static str {
        match self {
            Piece::Postgres => "postgresql",
            Piece::Redis => "redis-server",
            Piece::Chromium => "chromium chromium-driver",
            Piece::GnuPg => "gnupg",
            Piece::Nginx => "nginx-light",
            Piece::Wrk => "wrk",
            Piece::Python => "python3-venv",
            Piece::PureFtpd => "pure-ftpd",
            Piece::Shell => "curl jq gnupg",
        }
    }
}

/// Whether heavy tests run at full size: under `CI=true`, or with
/// `KEYWARD_TEST_FULL=1`; smaller otherwise, so that a local run stays quick.
pub fn full_size() -> bool {
    std::env::var("CI").as_deref() == Ok("true") || std::env::var("KEYWARD_TEST_FULL").as_deref() == Ok("1")
}

/// Records that `test` ran with `piece`, got from `source` (a variable's
/// name or "a throwaway …"). A test recorded twice counts once.
pub fn ran(piece: Piece, test: &str, source: &str) {
    run().record(&format!("{}\tran\t{source}\t{test}\n", piece.name()));
}

/// Records that `test` skips for want of `piece` (`why`), printing it once
/// per test binary and piece. Panics under `CI=true`: there, nothing skips.
pub fn skipped(piece: Piece, test: &str, why: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs {}: {why}", piece.name());
    static SHOWN: Mutex<Vec<Piece>> = Mutex::new(Vec::new());
    let mut shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner());
    if !shown.contains(&piece) {
        shown.push(piece);
        // Past the test harness's capture, so that `cargo test` shows it.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test} and the other tests here that need {}: {why} (apt-get install -y {})",
            piece.name(),
            piece.packages()
        );
    }
    drop(shown);
    run().record(&format!("{}\tskipped\t{why}\t{}\t{test}\n", piece.name(), piece.packages()));
}

/// The run's PostgreSQL: a base URL, or why there is none.
pub fn postgres() -> Result<String, String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| run().provision("postgres", start_postgres)).clone()
}

/// The run's Redis: a URL, or why there is none.
pub fn redis() -> Result<String, String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| run().provision("redis", start_redis)).clone()
}

struct Run {
    dir: PathBuf,
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).unwrap_or_default();
        let runner = if comm.trim().starts_with("cargo") { parent } else { me };
        let dir = std::env::temp_dir().join(format!("keyward-test-run-{runner}-{}", started_at(runner)));
        std::fs::create_dir_all(&dir).expect("the test run's directory");
        let run = Run { dir };
        run.locked(|dir| {
            let marker = dir.join("watcher");
            if !marker.exists() {
                watch(dir, runner);
                std::fs::write(&marker, b"").expect("the watcher's marker");
            }
        });
        run
    })
}

/// The start time of process `pid` (clock ticks since boot), so that a
/// reused pid names another run.
fn started_at(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 22; the command name (field 2) may hold spaces, so count after its ')'.
    stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(19)).unwrap_or("0").to_owned()
}

impl Run {
    /// Runs `f` holding the run's lock (test binaries run one after
    /// another, but threads of one run at once).
    fn locked<T>(&self, f: impl FnOnce(&Path) -> T) -> T {
        static IN_PROCESS: Mutex<()> = Mutex::new(());
        let _turn = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
        let lock = File::create(self.dir.join("lock")).expect("the run's lock file");
        lock.lock().expect("the run's lock");
        let out = f(&self.dir);
        let _ = lock.unlock();
        out
    }

    fn record(&self, line: &str) {
        let mut log = OpenOptions::new().create(true).append(true).open(self.dir.join("log")).expect("the run's log");
        // One short write with O_APPEND: lines of parallel tests never interleave.
        let _ = log.write_all(line.as_bytes());
    }

    /// The URL `start` gave the first test of the run that asked, or the
    /// reason it could not; `start` gets the run's directory and writes
    /// how to stop what it started into `stop`.
    fn provision(&self, what: &str, start: fn(&Path) -> Result<String, String>) -> Result<String, String> {
        self.locked(|dir| {
            let (ok, failed) = (dir.join(format!("{what}.url")), dir.join(format!("{what}.failed")));
            if let Ok(url) = std::fs::read_to_string(&ok) {
                return Ok(url);
            }
            if let Ok(why) = std::fs::read_to_string(&failed) {
                return Err(why);
            }
            let outcome = start(dir);
            match &outcome {
                Ok(url) => std::fs::write(&ok, url),
                Err(why) => std::fs::write(&failed, why),
            }
            .expect("the run's state");
            outcome
        })
    }
}

/// Starts the watcher: when `runner` ends, it stops what the run started,
/// prints the summary and removes the run's directory. It has a process
/// group of its own, so a Ctrl-C of the run does not stop it before it
/// has cleaned up.
#[allow(clippy::zombie_processes, reason = "the watcher outlives the test binary that starts it")]
fn watch(dir: &Path, runner: u32) {
    const SCRIPT: &str = r#"
d="$1"; runner="$2"
while kill -0 "$runner" 2>/dev/null; do sleep 0.2; done
[ -f "$d/stop" ] && sh "$d/stop" >/dev/null 2>&1
[ -f "$d/log" ] && awk -F '\t' '
  seen[$0]++ { next }
  $2 == "ran" { ran[$1 " (" $3 ")"]++; total++ }
  $2 == "skipped" { skip[$1 ": " $3]++; missing[$4] = 1; skipped++ }
  END {
    line = "keyward tests:"; sep = " "
    for (k in ran) { line = line sep ran[k] " ran with " k; sep = ", " }
    if (!skipped) { line = line (total ? "; " : " ") "none skipped" }
    else { line = line (total ? "; " : " ") skipped " SKIPPED:"; sep = " "
      for (k in skip) { line = line sep skip[k] " for want of " k; sep = ", " }
      pk = ""; for (p in missing) pk = pk " " p
      line = line "; install them with: apt-get install -y" pk }
    print line > "/dev/stderr"
  }' "$d/log"
rm -rf "$d"
"#;
    let path = std::env::var("PATH").unwrap_or_default();
    Command::new("/bin/sh")
        .args(["-c", SCRIPT, "keyward-test-watcher"])
        .env("PATH", format!("{path}:/usr/bin:/bin"))
        .arg(dir)
        .arg(runner.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("sh starts the test run's watcher");
}

use std::os::unix::process::CommandExt as _;

fn add_stop(dir: &Path, command: &str) {
    let mut stop = OpenOptions::new().create(true).append(true).open(dir.join("stop")).expect("the run's stop file");
    let _ = writeln!(stop, "{command}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

fn wait_for_port(port: u16, what: &str) -> Result<(), String> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{what} did not listen on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn start_postgres(dir: &Path) -> Result<String, String> {
    let bin = Cluster::installed().ok_or("PostgreSQL's initdb and pg_ctl are not installed")?;
    let cluster = Cluster::create(bin, dir.join("postgres"))?;
    cluster.start()?;
    add_stop(dir, &cluster.stop_command());
    Ok(cluster.url())
}

fn start_redis(dir: &Path) -> Result<String, String> {
    let port = free_port();
    let pidfile = dir.join("redis.pid");
    let status = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "yes", "--pidfile"])
        .arg(&pidfile)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdout(Stdio::null())
        .status()
        .map_err(|_| "redis-server is not installed".to_owned())?;
    if !status.success() {
        return Err(format!("redis-server did not start ({status})"));
    }
    add_stop(dir, &format!("kill $(cat '{}')", pidfile.display()));
    wait_for_port(port, "redis-server")?;
    Ok(format!("redis://127.0.0.1:{port}"))
}

/// A PostgreSQL cluster of the tests' own, made with initdb and run with
/// pg_ctl (as the `postgres` user when the tests run as root, since initdb
/// refuses root), listening on loopback on a free port.
pub struct Cluster {
    bin: PathBuf,
    home: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// The directory of the newest installed PostgreSQL's server binaries.
    pub fn installed() -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
            .collect();
        dirs.sort();
        dirs.pop()
    }

    /// initdb into `home/data` (made, with `home`, for the purpose); not started.
    pub fn create(bin: PathBuf, home: PathBuf) -> Result<Cluster, String> {
        std::fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
        let as_postgres = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if as_postgres {
            let chown = Command::new("chown").args(["-R", "postgres"]).arg(&home).status();
            if !chown.is_ok_and(|s| s.success()) {
                return Err("cannot give the cluster's directory to the postgres user".into());
            }
        }
        let cluster = Cluster { bin, home, port: free_port(), as_postgres };
        let out = cluster
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-D"])
            .arg(cluster.home.join("data"))
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(cluster)
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// `pg_ctl ARGS` on this cluster, waiting for it to finish.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.home.display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.home.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.home.join("postgres.log"))
            .arg("-w")
            .args(args)
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("pg_ctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    pub fn start(&self) -> Result<(), String> {
        self.pg_ctl(&["start"])
    }

    /// A shell command that stops the cluster at once.
    pub fn stop_command(&self) -> String {
        let runner = if self.as_postgres { "runuser -u postgres -- " } else { "" };
        format!(
            "{runner}'{}' -D '{}' -m immediate stop",
            self.bin.join("pg_ctl").display(),
            self.home.join("data").display()
        )
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}
