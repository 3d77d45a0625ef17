//! Memory stays bounded under a verify-only load that nobody observes: no
//! scraper reads `/metrics`, so only the server's own upkeep keeps its
//! buffers in check. The real binary, a bounded wrk run (seconds), RSS
//! sampled from /proc; after a warm-up, one of the last two windows must
//! grow by near zero. A leak grows every window; a one-off step (a new
//! thread's allocator arena, seen once in CI as +2 MiB) grows one.
//!
//! Needs `wrk` (`.ci/run` installs it): skips with a message without it,
//! fails instead under CI=true.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

mod support;
const KEYS: usize = 100;
const WARM_UP: Duration = Duration::from_secs(6);
const WINDOW: Duration = Duration::from_secs(8);
/// Growth allowed in the smaller of the last two windows: allocator noise,
/// not a leak. Before
/// the recorder's upkeep ran on its own, the debug server grew by several
/// MiB per window here (about 35 bytes per verification).
const MAX_LAST_WINDOW_GROWTH_KIB: i64 = 1024;

fn rss_kib(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const LUA: &str = r#"
local keys = {}
for line in io.lines(os.getenv("KW_KEYS")) do keys[#keys + 1] = line end
local admin = os.getenv("KW_ADMIN")
local i = 0
request = function()
  i = i + 1
  local body = '{"key": "' .. keys[(i % #keys) + 1] .. '"}'
  return wrk.format("POST", "/v1/keys/verify", {["Authorization"] = "Bearer " .. admin, ["Content-Type"] = "application/json"}, body)
end
"#;

fn wrk_available() -> bool {
    Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

#[tokio::test]
async fn rss_stops_growing_under_verify_load_without_a_scraper() {
    use keyward_store::testing::run::{Piece, ran, skipped};
    const TEST: &str = "rss_stops_growing_under_verify_load_without_a_scraper";
    if !wrk_available() {
        skipped(Piece::Wrk, TEST, "wrk is not installed");
        return;
    }
    ran(Piece::Wrk, TEST, "wrk");
    let dir = tempfile::tempdir().unwrap();
    let node = support::serve(&["--data-dir", dir.path().to_str().unwrap(), "--log-level", "warn"]);
    let pid = node.child.id();
    let (base, admin) = (node.base.clone(), node.admin.clone().expect("the first start printed the admin key"));

    let http = reqwest::Client::new();
    let mut secrets = Vec::new();
    for i in 0..KEYS {
        let url = format!("{base}/v1/keys");
        let (_, body) =
            support::call(&http, reqwest::Method::POST, url, &admin, &json!({"name": format!("load {i}")})).await;
        secrets.push(body["secret"].as_str().expect("created").to_owned());
    }
    let keys_file = dir.path().join("keys.txt");
    std::fs::write(&keys_file, secrets.join("\n") + "\n").unwrap();
    let lua = dir.path().join("verify.lua");
    std::fs::write(&lua, LUA).unwrap();

    let total = WARM_UP + WINDOW * 3;
    let wrk = Command::new("wrk")
        .args(["-t1", "-c16", &format!("-d{}s", total.as_secs() + 1), "-s", lua.to_str().unwrap(), &base])
        .env("KW_KEYS", &keys_file)
        .env("KW_ADMIN", &admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut samples = Vec::new();
    for mark in [WARM_UP, WARM_UP + WINDOW, WARM_UP + WINDOW * 2, WARM_UP + WINDOW * 3] {
        tokio::time::sleep(mark.saturating_sub(started.elapsed())).await;
        samples.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
    }
    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("wrk report: {report}"));
    assert!(!report.contains("Non-2xx"), "every verify answered 200: {report}");

    let growth: Vec<i64> = samples.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let (first, last) = (growth[0], growth[1].min(growth[2]));
    let per_window = requests as f64 * WINDOW.as_secs_f64() / total.as_secs_f64();
    println!(
        "memory: {requests} verifications in {:.0} s; RSS {} KiB after warm-up, {} KiB, {} KiB, {} KiB; \
         window growth {first:+} KiB, {:+} KiB, {:+} KiB ({:.1} bytes per verification in the smaller of the last two)",
        total.as_secs_f64(),
        samples[0].1,
        samples[1].1,
        samples[2].1,
        samples[3].1,
        growth[1],
        growth[2],
        last as f64 * 1024.0 / per_window,
    );
    assert!(requests > 1000, "the load ran ({requests} requests)");
    assert!(
        last <= MAX_LAST_WINDOW_GROWTH_KIB,
        "RSS grew at least {last} KiB in each of the last two {} s windows (allowed {MAX_LAST_WINDOW_GROWTH_KIB} KiB)",
        WINDOW.as_secs()
    );
}
