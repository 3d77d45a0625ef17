//! 1 GiB (at full size: CI, or `KEYWARD_TEST_FULL=1`; 256 MiB otherwise)
//! encrypted and decrypted through `keyward serve` (the real
//! binary), streamed both ways: the server's peak RSS may grow by less than
//! 64 MiB, and what comes back is the file, byte for byte. Prints the
//! throughput of each direction and of GnuPG on the same data. Then
//! 256 MiB (64 MiB) each way with Python's requests, which sends the whole body
//! before it reads the answer (the server keeps reading meanwhile, its
//! answer waiting in a temporary file), in the same memory bound.
//!
//! Needs `gpg` (`.ci/run` installs it): skips with a message without it,
//! fails instead under CI=true.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use futures_util::StreamExt;
use keyward_store::testing::run::full_size;
use serde_json::json;

#[path = "api/gnupg.rs"]
mod gnupg;
#[path = "support/python.rs"]
mod python;
mod support;

/// The file's size: 1 GiB at full size (CI), 256 MiB otherwise.
fn size() -> u64 {
    if full_size() { 1 << 30 } else { 256 << 20 }
}
const CHUNK: usize = 1 << 20;
const MAX_GROWTH_KIB: i64 = 64 * 1024;
const MASTER_KEY: &str = "1f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The test file, 1 MiB at a time: chunk `i` is a pattern of its own, so a
/// chunk out of place or missing shows.
fn chunk(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn file_stream() -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures_util::stream::iter((0..size() / CHUNK as u64).map(|i| Ok(chunk(i))))
}

fn status_kib(pid: u32, field: &str) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).expect("the field in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn mb_per_s(seconds: f64) -> f64 {
    size() as f64 / 1e6 / seconds
}

#[tokio::test]
async fn one_gib_streams_through_encrypt_and_decrypt_in_bounded_memory() {
    let Some(gpg) = gnupg::Gpg::new("one_gib_streams_through_encrypt_and_decrypt_in_bounded_memory") else { return };
    let fpr = gpg.generate("Stream <stream@example.com>", gnupg::Kind::Ed25519, "", "never");
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let master = dir.path().join("master.key");
    std::fs::write(&master, MASTER_KEY).unwrap();
    let node = support::serve(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--master-key-file",
        master.to_str().unwrap(),
        "--log-level",
        "warn",
    ]);
    let (base, admin) = (node.base.clone(), node.admin.clone().expect("the first start printed the admin key"));
    let pid = node.child.id();
    let http = reqwest::Client::new();
    let body = json!({"name": "stream", "type": "pgp", "contents": gpg.export_secret(&fpr, ""), "private": true});
    let (status, key) = support::call(&http, reqwest::Method::POST, format!("{base}/v1/pgp-keys"), &admin, &body).await;
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();
    let before = status_kib(pid, "VmRSS:");

    // Encrypt: the file in, the message out to disk.
    let sealed_path = dir.path().join("file.pgp");
    let started = Instant::now();
    let resp = http
        .post(format!("{base}/v1/pgp-keys/{id}/encrypt"))
        .bearer_auth(&admin)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(file_stream()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&sealed_path).unwrap());
    let mut answer = resp.bytes_stream();
    while let Some(part) = answer.next().await {
        out.write_all(&part.expect("the whole message")).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let encrypt_s = started.elapsed().as_secs_f64();
    let sealed_len = std::fs::metadata(&sealed_path).unwrap().len();
    assert!(sealed_len > size(), "a message of {sealed_len} bytes holds the whole file");

    // Decrypt: the message in, compared with the file as it comes back.
    let started = Instant::now();
    let message = tokio::fs::File::open(&sealed_path).await.unwrap();
    let resp = http
        .post(format!("{base}/v1/pgp-keys/{id}/decrypt"))
        .bearer_auth(&admin)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(tokio_util_stream(message)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (mut seen, mut pending) = (0u64, Vec::with_capacity(2 * CHUNK));
    let mut answer = resp.bytes_stream();
    while let Some(part) = answer.next().await {
        pending.extend_from_slice(&part.expect("the whole file"));
        while pending.len() >= CHUNK {
            let i = seen / CHUNK as u64;
            assert!(pending[..CHUNK] == chunk(i)[..], "chunk {i} comes back as it went in");
            pending.drain(..CHUNK);
            seen += CHUNK as u64;
        }
    }
    assert!(pending.is_empty() && seen == size(), "{seen} bytes came back, {} left over", pending.len());
    let decrypt_s = started.elapsed().as_secs_f64();
    let growth = status_kib(pid, "VmHWM:") - before;
    println!(
        "pgp stream, {} MiB: encrypt {:.0} MB/s ({encrypt_s:.1} s), decrypt {:.0} MB/s ({decrypt_s:.1} s), \
         server peak RSS growth {} KiB (limit {MAX_GROWTH_KIB})",
        size() >> 20,
        mb_per_s(encrypt_s),
        mb_per_s(decrypt_s),
        growth
    );
    assert!(growth < MAX_GROWTH_KIB, "the server's peak RSS grew by {growth} KiB");

    // GnuPG on the same data, for comparison (printed, not asserted).
    let started = Instant::now();
    let mut enc = Command::new("gpg")
        .env("GNUPGHOME", gpg_home(&gpg))
        .args(["--batch", "--quiet", "-z", "0", "--trust-model", "always", "--encrypt", "--recipient", &fpr])
        .args(["--output", "/dev/null"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = enc.stdin.take().unwrap();
    for i in 0..size() / CHUNK as u64 {
        stdin.write_all(&chunk(i)).unwrap();
    }
    drop(stdin);
    assert!(enc.wait().unwrap().success());
    let gpg_encrypt_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let dec = Command::new("gpg")
        .env("GNUPGHOME", gpg_home(&gpg))
        .args(["--batch", "--quiet", "--decrypt", "--output", "/dev/null", sealed_path.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(dec.success(), "gpg decrypts keyward's 1 GiB message");
    let gpg_decrypt_s = started.elapsed().as_secs_f64();
    println!(
        "gpg on the same data: encrypt (-z 0) {:.0} MB/s ({gpg_encrypt_s:.1} s), decrypt {:.0} MB/s ({gpg_decrypt_s:.1} s)",
        mb_per_s(gpg_encrypt_s),
        mb_per_s(gpg_decrypt_s)
    );
}

#[tokio::test]
async fn clients_that_send_the_whole_body_first_get_their_answer() {
    const TEST: &str = "clients_that_send_the_whole_body_first_get_their_answer";
    let Some(gpg) = gnupg::Gpg::new(TEST) else { return };
    let Some(python) = python::python(TEST) else { return };
    let fpr = gpg.generate("Half <half@example.com>", gnupg::Kind::Ed25519, "", "never");
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let node = support::serve(&["--data-dir", dir.path().to_str().unwrap(), "--log-level", "warn"]);
    let (base, admin) = (node.base.clone(), node.admin.clone().expect("the first start printed the admin key"));
    let http = reqwest::Client::new();
    let body = json!({"name": "half", "type": "pgp", "contents": gpg.export_secret(&fpr, ""), "private": true});
    let (status, key) = support::call(&http, reqwest::Method::POST, format!("{base}/v1/pgp-keys"), &admin, &body).await;
    assert_eq!(status, 201, "{key}");
    let pid = node.child.id();
    let before = status_kib(pid, "VmRSS:");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pgp/half_duplex.py");
    let python_size: u64 = if full_size() { 256 << 20 } else { 64 << 20 };
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("KEYWARD_URL", &base)
        .env("KEYWARD_KEY", &admin)
        .env("PGP_ID", key["id"].as_str().unwrap())
        .env("SIZE", python_size.to_string())
        .env("DIR", dir.path())
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let growth = status_kib(pid, "VmHWM:") - before;
    println!(
        "python requests, {} MiB:\n{stdout}server peak RSS growth {growth} KiB (limit {MAX_GROWTH_KIB})",
        python_size >> 20
    );
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(growth < MAX_GROWTH_KIB, "the server's peak RSS grew by {growth} KiB");
}

fn gpg_home(gpg: &gnupg::Gpg) -> std::path::PathBuf {
    gpg.home().to_path_buf()
}

/// A file read as a stream of chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}
