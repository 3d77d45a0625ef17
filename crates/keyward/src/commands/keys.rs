//! `keyward keys …`: key administration through a running server's /v1 API.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::{ClientArgs, KeysCommand};

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        Ok(Client {
            http: reqwest::Client::builder().build().context("building the HTTP client")?,
            base: args.url.trim_end_matches('/').to_owned(),
            key: args.key.clone(),
        })
    }

    /// Sends a request; returns the JSON body of a success, or an error
    /// carrying the server's message and code.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach keyward at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            return Ok(value);
        }
        let message = value.get("error").and_then(Value::as_str).unwrap_or("request failed");
        let code = value.get("code").and_then(Value::as_str).unwrap_or("unknown");
        anyhow::bail!("{message} ({code}, HTTP {})", status.as_u16())
    }
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("-")
}

fn scopes(v: &Value) -> String {
    let list: Vec<&str> = v
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() { "-".into() } else { list.join(",") }
}

fn print_table(keys: &[Value]) {
    let rows: Vec<[String; 8]> = keys
        .iter()
        .map(|k| {
            [
                s(k, "id").into(),
                s(k, "name").into(),
                s(k, "maskedKey").into(),
                scopes(k),
                s(k, "state").into(),
                s(k, "createdAt").into(),
                s(k, "lastUsed").into(),
                s(k, "expiresAt").into(),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "KEY", "SCOPES", "STATE", "CREATED", "LAST USED", "EXPIRES"];
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn print_key(key: &Value, json_out: bool) {
    if json_out {
        println!("{key}");
    } else {
        print_table(std::slice::from_ref(key));
    }
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match cmd {
        KeysCommand::Create { client, name, description, scopes, resources, expires_in, environment, read_only } => {
            let c = Client::new(&client)?;
            let mut body = json!({ "name": name, "scopes": scopes, "resources": resources, "readOnly": read_only });
            let obj = body.as_object_mut().expect("an object");
            if let Some(d) = description {
                obj.insert("description".into(), d.into());
            }
            if let Some(days) = expires_in {
                obj.insert("expiresIn".into(), days.into());
            }
            if let Some(env) = environment {
                obj.insert("environment".into(), env.into());
            }
            let created = c.call(Method::POST, "/v1/keys", Some(body)).await?;
            if client.json {
                println!("{created}");
            } else {
                print_table(std::slice::from_ref(&created));
                println!("\nSecret (shown only now; store it safely):\n\n    {}\n", s(&created, "secret"));
            }
        }
        KeysCommand::List { client, state, name } => {
            let c = Client::new(&client)?;
            let mut keys = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut query = vec![("limit", "200".to_owned())];
                query.extend(state.clone().map(|s| ("state", s)));
                query.extend(name.clone().map(|n| ("name", n)));
                query.extend(cursor.clone().map(|c| ("cursor", c)));
                let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
                let page = c.call(Method::GET, &format!("/v1/keys?{}", qs.join("&")), None).await?;
                keys.extend(page.get("data").and_then(Value::as_array).cloned().unwrap_or_default());
                cursor = page.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
                if cursor.is_none() {
                    break;
                }
            }
            if client.json {
                println!("{}", Value::Array(keys));
            } else {
                print_table(&keys);
            }
        }
        KeysCommand::Get { client, id } => {
            let c = Client::new(&client)?;
            print_key(&c.call(Method::GET, &format!("/v1/keys/{}", urlencode(&id)), None).await?, client.json);
        }
        KeysCommand::Revoke { client, id } => {
            let c = Client::new(&client)?;
            let key = c.call(Method::POST, &format!("/v1/keys/{}/revoke", urlencode(&id)), None).await?;
            print_key(&key, client.json);
        }
        KeysCommand::Delete { client, id } => {
            let c = Client::new(&client)?;
            c.call(Method::DELETE, &format!("/v1/keys/{}", urlencode(&id)), None).await?;
            if client.json {
                println!("{}", json!({ "deleted": id }));
            } else {
                println!("Deleted {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
