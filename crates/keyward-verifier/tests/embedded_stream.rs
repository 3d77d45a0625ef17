//! What the embedded verifier does with a stream that breaks: a stream cut
//! mid-line is resumed from the last event applied (`?after=`); a malformed
//! event, in the changes or inside a snapshot, makes it start again from a
//! snapshot (no `after`), keeping nothing of the bad stream's partial
//! snapshot; and none of it panics. The real server never sends such
//! events, so a stand-in written here serves them, one answer per
//! connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::routing::get;
use chrono::Utc;
use futures_util::StreamExt;
use keyward_core::hash::SecretHasher;
use keyward_core::key::{ApiKey, KeyDraft};
use keyward_core::token::{self, Environment};
use keyward_core::workspace::Workspace;
use keyward_verifier::embedded::{Check, Options, Path, Verifier};
use keyward_verifier::replica::{Event, ReplicaWorkspace};

struct Keys {
    hasher: SecretHasher,
    ws: Workspace,
}

impl Keys {
    /// A key made as the server makes it, and its secret.
    fn key(&self) -> (ApiKey, String) {
        let secret = token::generate("kw", Environment::Live).expose().to_owned();
        let parsed = token::parse(&secret).unwrap();
        let draft = KeyDraft { name: Some("k".into()), scopes: vec!["read".into()], ..Default::default() };
        let mut key = draft.validate(&self.ws, Utc::now()).unwrap().into_key(
            parsed.key_id(),
            &self.ws.id,
            token::mask(&secret),
            self.hasher.native(&parsed),
            Utc::now(),
        );
        key.replica = Some(self.hasher.replica(&self.ws.id).native(&parsed).digest);
        (key, secret)
    }

    fn workspace(&self, seq: u64) -> String {
        let workspace = ReplicaWorkspace::new(&self.ws.id, &self.hasher.replica_key(&self.ws.id), &[], &[]);
        line(&Event::Workspace { seq, workspace })
    }
}

fn line(event: &Event) -> String {
    serde_json::to_string(event).unwrap() + "\n"
}

fn key_line(seq: u64, key: &ApiKey) -> String {
    line(&Event::key(seq, &key.id, &key.workspace_id, Some(key)))
}

/// The stand-in's answers, one per connection (the last one stays open),
/// and the `after` each connection asked with.
#[derive(Clone)]
struct Stand {
    answers: Arc<Vec<Vec<String>>>,
    asked: Arc<Mutex<Vec<Option<String>>>>,
}

async fn stream(State(stand): State<Stand>, Query(query): Query<HashMap<String, String>>) -> Body {
    let n = {
        let mut asked = stand.asked.lock().unwrap();
        asked.push(query.get("after").cloned());
        asked.len() - 1
    };
    let last = n + 1 >= stand.answers.len();
    let lines = stand.answers[n.min(stand.answers.len() - 1)].clone();
    let chunks = futures_util::stream::iter(lines.into_iter().map(Ok::<_, std::io::Error>));
    if last { Body::from_stream(chunks.chain(futures_util::stream::pending())) } else { Body::from_stream(chunks) }
}

#[tokio::test]
async fn a_broken_or_malformed_stream_is_resumed_or_started_again() {
    let keys = Keys { hasher: SecretHasher::new(&[7u8; 32]).unwrap(), ws: Workspace::new("w", Utc::now()).unwrap() };
    let (a, a_secret) = keys.key();
    let (b, b_secret) = keys.key();
    let (c, c_secret) = keys.key();
    let (d, d_secret) = keys.key();
    let mut bad_digest = line(&Event::key(7, &b.id, &b.workspace_id, Some(&b)));
    bad_digest = bad_digest.replacen("\"digest\":\"", "\"digest\":\"zz", 1);
    assert!(bad_digest.contains("\"digest\":\"zz"));
    let answers = vec![
        // A snapshot holding A, then B made, then a line cut off: the
        // stream ends as a killed server's does.
        vec![
            line(&Event::Snapshot { seq: 1 }),
            keys.workspace(1),
            key_line(1, &a),
            line(&Event::SnapshotEnd { seq: 1 }),
            key_line(5, &b),
            "{\"type\":\"key\",\"se".to_owned(),
        ],
        // Resumed after 5: a change whose record does not parse.
        vec![line(&Event::Heartbeat { seq: 6 }), bad_digest],
        // Started again: a snapshot broken by a line that is not JSON.
        vec![line(&Event::Snapshot { seq: 8 }), keys.workspace(8), key_line(8, &c), "not json\n".to_owned()],
        // Started again: C and D are all there is.
        vec![
            line(&Event::Snapshot { seq: 9 }),
            keys.workspace(9),
            key_line(9, &c),
            key_line(9, &d),
            line(&Event::SnapshotEnd { seq: 9 }),
        ],
    ];
    let stand = Stand { answers: Arc::new(answers), asked: Arc::default() };
    let app = Router::new().route("/v1/replication/stream", get(stream)).with_state(stand.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let verifier = Verifier::connect_with(&url, "kw_test_unused", Options::default()).await.unwrap();
    let code = |secret: &str| {
        let verdict = verifier.verify_local(&Check { key: secret, ..Check::default() }).unwrap();
        assert_eq!(verdict.path, Path::Local);
        verdict.decision.code.as_str().to_owned()
    };
    for _ in 0..500 {
        if stand.asked.lock().unwrap().len() == 4 && code(&d_secret) == "VALID" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = stand.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [None, Some("5".to_owned()), None, None],
        "resumed after the cut, started over after each bad line"
    );
    // The last snapshot is the whole state: A and B are gone, C and D held.
    assert_eq!(verifier.len(), 2);
    assert_eq!((code(&c_secret), code(&d_secret)), ("VALID".to_owned(), "VALID".to_owned()));
    assert_eq!((code(&a_secret), code(&b_secret)), ("NOT_FOUND".to_owned(), "NOT_FOUND".to_owned()));
    assert!(!verifier.is_stale());
}
