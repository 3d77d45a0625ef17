//! The webhook receiver the tests send to (`tests/webhooks/receiver.py`,
//! which checks each delivery with the `standardwebhooks` library), shared
//! by the test binaries that use it (with `support/python.rs`).

#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};

/// The receiver (`tests/webhooks/receiver.py`), killed when dropped.
pub struct Receiver {
    child: tokio::process::Child,
    pub url: String,
    client: reqwest::Client,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Receiver {
    pub async fn start(test: &str) -> Option<Receiver> {
        use tokio::io::AsyncBufReadExt;
        let python = crate::python::python(test)?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the receiver starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines.next_line().await.unwrap().expect("the receiver prints its port");
        Some(Receiver { child, url: format!("http://127.0.0.1:{port}/hook"), client: reqwest::Client::new() })
    }

    fn control(&self, path: &str) -> String {
        self.url.replace("/hook", path)
    }

    pub async fn secrets(&self, secrets: &[&str]) {
        let r = self.client.post(self.control("/_secrets")).json(&json!({"secrets": secrets})).send().await.unwrap();
        assert!(r.status().is_success());
    }

    pub async fn answer(&self, status: u16) {
        let r = self.client.post(self.control("/_status")).json(&json!({"status": status})).send().await.unwrap();
        assert!(r.status().is_success());
    }

    pub async fn events(&self) -> Vec<Value> {
        let r = self.client.get(self.control("/_events")).send().await.unwrap();
        r.json::<Vec<Value>>().await.unwrap()
    }

    pub async fn count(&self) -> usize {
        let r = self.client.get(self.control("/_count")).send().await.unwrap();
        r.json::<Value>().await.unwrap()["count"].as_u64().unwrap() as usize
    }

    /// Waits until `n` deliveries arrived (at most 10 s); all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        self.wait_for_within(n, Duration::from_secs(10)).await
    }

    /// Waits until `n` deliveries arrived, at most `limit`; all of them.
    pub async fn wait_for_within(&self, n: usize, limit: Duration) -> Vec<Value> {
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if self.count().await >= n {
                return self.events().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = self.events().await;
        panic!("{n} deliveries did not arrive within {limit:?}: {} did", got.len());
    }
}
