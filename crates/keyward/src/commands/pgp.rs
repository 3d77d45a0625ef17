//! `keyward pgp …`: PGP keys for file encryption through a running
//! server's /v1 API, and files encrypted or decrypted with them, streamed
//! (standard input to standard output, or files).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;

use super::keys::{Client, Refused, USAGE, Usage, print_rows, s, urlencode};
use crate::cli::PgpCommand;

pub async fn run(cmd: PgpCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let client = match &cmd {
        PgpCommand::Upload { client, .. }
        | PgpCommand::List { client }
        | PgpCommand::Get { client, .. }
        | PgpCommand::Public { client, .. }
        | PgpCommand::Edit { client, .. }
        | PgpCommand::Delete { client, .. }
        | PgpCommand::Encrypt { client, .. }
        | PgpCommand::Decrypt { client, .. } => client,
    };
    let Some(c) = Client::new(client)? else { return Ok(ExitCode::from(USAGE)) };
    let path = |id: &str| format!("/v1/pgp-keys/{}", urlencode(id));
    let show = |key: Value| {
        if c.json {
            outln!("{key}");
        } else {
            print_keys(&[key]);
        }
    };
    match cmd {
        PgpCommand::Upload { name, description, file, private, passphrase_file, .. } => {
            let contents = read_key_file(&file)?;
            let passphrase = match passphrase_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                ),
                None => std::env::var("KEYWARD_PGP_PASSPHRASE").ok(),
            };
            let mut body = Map::new();
            body.insert("name".into(), name.into());
            if let Some(d) = description {
                body.insert("description".into(), d.into());
            }
            body.insert("type".into(), "pgp".into());
            body.insert("contents".into(), contents.into());
            body.insert("private".into(), private.into());
            if let Some(p) = passphrase.filter(|p| !p.is_empty()) {
                body.insert("passphrase".into(), p.into());
            }
            show(c.call(Method::POST, "/v1/pgp-keys", Some(Value::Object(body))).await?);
        }
        PgpCommand::List { .. } => {
            let list = c.call(Method::GET, "/v1/pgp-keys", None).await?;
            let all = list.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
            if c.json {
                outln!("{}", Value::Array(all));
            } else {
                print_keys(&all);
            }
        }
        PgpCommand::Get { id, .. } => show(c.call(Method::GET, &path(&id), None).await?),
        PgpCommand::Public { id, .. } => {
            let resp = c.http.get(format!("{}{}/public", c.base, path(&id))).bearer_auth(&c.key).send().await;
            let resp = refused_unless_ok(resp.with_context(|| format!("cannot reach keyward at {}", c.base))?).await?;
            outln!("{}", resp.text().await.context("reading the answer")?.trim_end());
        }
        PgpCommand::Edit { id, name, description, .. } => {
            let mut body = Map::new();
            if let Some(n) = name {
                body.insert("name".into(), n.into());
            }
            if let Some(d) = description {
                body.insert("description".into(), if d.is_empty() { Value::Null } else { d.into() });
            }
            if body.is_empty() {
                return Err(Usage("nothing to change: give --name or --description".into()).into());
            }
            show(c.call(Method::PATCH, &path(&id), Some(Value::Object(body))).await?);
        }
        PgpCommand::Delete { id, .. } => {
            c.call(Method::DELETE, &path(&id), None).await?;
            if c.json {
                outln!("{}", json!({ "deleted": id }));
            } else {
                outln!("Deleted {id}");
            }
        }
        PgpCommand::Encrypt { id, armor, input, output, .. } => {
            let query = if armor { "?armor=true" } else { "" };
            stream(&c, &format!("{}/encrypt{query}", path(&id)), input.as_deref(), output.as_deref()).await?;
        }
        PgpCommand::Decrypt { id, input, output, .. } => {
            stream(&c, &format!("{}/decrypt", path(&id)), input.as_deref(), output.as_deref()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A key file as the API takes it: armored text as is, a binary export as
/// base64.
fn read_key_file(file: &Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).context("reading standard input")?;
    } else {
        bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(e.into_bytes())
        }
    })
}

/// The server's refusal (its message and code) unless the answer is 2xx.
async fn refused_unless_ok(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    let message = value.get("error").and_then(Value::as_str).unwrap_or("request failed");
    let code = value.get("code").and_then(Value::as_str).unwrap_or("unknown");
    Err(Refused(format!("{message} ({code}, HTTP {status})")).into())
}

/// Sends `input` (or standard input) as the body of a POST to `path` and
/// writes the answer to `output` (or standard output), chunk by chunk.
async fn stream(c: &Client, path: &str, input: Option<&Path>, output: Option<&Path>) -> anyhow::Result<()> {
    let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match input {
        Some(p) => Box::new(tokio::fs::File::open(p).await.with_context(|| format!("opening {}", p.display()))?),
        None => Box::new(tokio::io::stdin()),
    };
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024));
    let resp = c
        .http
        .post(format!("{}{path}", c.base))
        .bearer_auth(&c.key)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach keyward at {}", c.base))?;
    let resp = refused_unless_ok(resp).await?;
    let mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match output {
        Some(p) => Box::new(tokio::fs::File::create(p).await.with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(tokio::io::stdout()),
    };
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.context("the answer stopped before its end (the input may be damaged)")?;
        out.write_all(&chunk).await.context("writing the output")?;
    }
    out.flush().await.context("writing the output")?;
    Ok(())
}

fn print_keys(keys: &[Value]) {
    let rows: Vec<[String; 6]> = keys
        .iter()
        .map(|k| {
            let kind = if k["private"] == json!(true) { "private" } else { "public" };
            let expires = match (k["expiresAt"].as_str(), k["expired"] == json!(true)) {
                (None, _) => "never".to_owned(),
                (Some(at), true) => format!("{at} (expired)"),
                (Some(at), false) => at.to_owned(),
            };
            [
                s(k, "id").into(),
                s(k, "name").into(),
                s(k, "fingerprint").into(),
                s(k, "algorithm").into(),
                expires,
                kind.into(),
            ]
        })
        .collect();
    print_rows(["ID", "NAME", "FINGERPRINT", "ALGORITHM", "EXPIRES", "KIND"], &rows);
}
