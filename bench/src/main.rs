//! Tools for `bench/run.py`:
//! - `seed`: a workspace with N keys, written through the store's bulk path
//!   (not N HTTP calls), and their tokens in a file;
//! - `floor`: the same framework answering the verify route with the same
//!   answer from a static buffer (no per-request allocation, no work), the
//!   ceiling keyward is measured against.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use keyward_core::hash::SecretHasher;
use keyward_core::key::KeyDraft;
use keyward_core::token;
use keyward_server::{ServerConfig, Services};

#[derive(Parser)]
#[command(about = "keyward benchmark tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a workspace with N keys and print {"workspaceId", "adminKey"}.
    Seed {
        #[arg(long)]
        database_url: String,
        /// Hash key as hex (give keyward serve the same with --hash-key).
        #[arg(long)]
        hash_key: String,
        #[arg(long)]
        count: usize,
        /// Where to write the N tokens, one per line.
        #[arg(long)]
        keys_out: std::path::PathBuf,
    },
    /// Serve POST /v1/keys/verify (and any other request) with a constant answer from a static buffer.
    Floor {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
    /// The floor's answer as an axum API; with --keyward, protected by the
    /// embedded verifier (`KeywardLayer`) following that server.
    Protected {
        #[arg(long, default_value = "127.0.0.1:8091")]
        listen: SocketAddr,
        /// keyward's URL; without it, the API is not protected.
        #[arg(long)]
        keyward: Option<String>,
        /// A key with keys:replicate (and keys:verify).
        #[arg(long, default_value = "")]
        key: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Seed { database_url, hash_key, count, keys_out } => {
                seed(&database_url, &hash_key, count, &keys_out).await
            }
            Command::Floor { listen } => floor(listen).await,
            Command::Protected { listen, keyward, key } => protected(listen, keyward, &key).await,
        }
    })
}

fn decode_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(s.len().is_multiple_of(2), "hex has an odd length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("not hex")).collect()
}

async fn seed(database_url: &str, hash_key: &str, count: usize, keys_out: &std::path::Path) -> anyhow::Result<()> {
    let hasher = SecretHasher::new(&decode_hex(hash_key)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = keyward_store::open(database_url).await?;
    let services = Services::new(store.clone(), hasher.clone(), &ServerConfig::default()).await?;
    let created = services.workspaces.create_with_admin_key("bench").await?;
    let ws = &created.workspace;
    let replica = hasher.replica(&ws.id);
    let now = Utc::now();
    let mut out = std::io::BufWriter::new(std::fs::File::create(keys_out)?);
    let mut batch = Vec::with_capacity(50_000);
    for i in 0..count {
        let draft = KeyDraft {
            name: Some(format!("bench {i}")),
            scopes: vec!["read".into(), "campaigns:write".into()],
            ..Default::default()
        };
        let valid = draft.validate(ws, now).map_err(|e| anyhow::anyhow!("{e}"))?;
        let secret = token::generate(&ws.token_prefix, valid.environment);
        let parsed = token::parse(secret.expose()).expect("generated tokens parse");
        let mut key =
            valid.into_key(parsed.key_id(), &ws.id, token::mask(secret.expose()), hasher.native(&parsed), now);
        // As the server makes keys: with their replica digest.
        key.replica = Some(replica.native(&parsed).digest);
        writeln!(out, "{}", secret.expose())?;
        batch.push(key);
        if batch.len() == batch.capacity() {
            store.insert_keys_bulk(&batch).await?;
            batch.clear();
        }
    }
    store.insert_keys_bulk(&batch).await?;
    out.flush()?;
    println!("{}", serde_json::json!({"workspaceId": ws.id, "adminKey": created.secret.expose()}));
    Ok(())
}

/// The floor's answer: a valid verification's shape, compact JSON, the
/// bytes the floor sent when it serialized a `json!` value per request
/// (keys sorted: serde_json without `preserve_order`).
const FLOOR_BODY: &str = concat!(
    r#"{"code":"VALID","expiresAt":null,"keyId":"key_0000000000000000","message":"API key is valid","#,
    r#""meta":{},"name":"floor","permissions":["read"],"roles":[],"type":"secret","valid":true,"#,
    r#""workspaceId":"ws_0000000000000000"}"#
);

/// The same bytes for every request: a static body and a static header
/// value, nothing allocated or serialized by the handler.
async fn floor_answer() -> impl axum::response::IntoResponse {
    use axum::http::{HeaderValue, header::CONTENT_TYPE};
    ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], FLOOR_BODY)
}

/// The verify route reads the request body, as keyward's does.
async fn floor_verify(_body: axum::body::Bytes) -> impl axum::response::IntoResponse {
    floor_answer().await
}

async fn protected(listen: SocketAddr, keyward: Option<String>, key: &str) -> anyhow::Result<()> {
    let app = axum::Router::new().fallback(floor_answer);
    let app = match keyward {
        Some(url) => {
            let verifier = keyward_verifier::Verifier::connect(&url, key).await?;
            app.layer(keyward_verifier::KeywardLayer::new(verifier))
        }
        None => app,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("protected API listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn floor(listen: SocketAddr) -> anyhow::Result<()> {
    use axum::routing::post;
    let app = axum::Router::new()
        .route("/v1/keys/verify", post(floor_verify))
        // Any other request gets the same answer: the floor doubles as the
        // upstream API behind a gateway.
        .fallback(floor_answer);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("floor listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
