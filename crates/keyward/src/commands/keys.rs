//! Client commands: `keyward keys …` and `keyward workspace get|set`,
//! through a running server's /v1 API. Tables for people, `--json` for
//! scripts; a refusal exits 1 with the server's message.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::cli::{ClientArgs, IdentitiesCommand, IdentitySettings, KeySettings, KeysCommand, WorkspaceCommand};

/// Exit status of a usage error (as clap's own).
pub const USAGE: u8 = 2;

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) key: String,
    pub(super) json: bool,
    /// How long each attempt waits for its answer.
    pub(super) timeout: std::time::Duration,
}

/// Attempts of a creating or changing call (with one Idempotency-Key).
const ATTEMPTS: u32 = 3;

/// A refusal from the server: printed as is, exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Client {
    /// `None` (after saying so) when no API key was given.
    pub(super) fn new(args: &ClientArgs) -> anyhow::Result<Option<Self>> {
        let Some(key) = args.key.clone().filter(|k| !k.trim().is_empty()) else {
            eprintln!("error: no API key: pass --key KEY or set KEYWARD_API_KEY");
            return Ok(None);
        };
        Ok(Some(Client {
            http: reqwest::Client::builder().build().context("building the HTTP client")?,
            base: args.url.trim_end_matches('/').to_owned(),
            key,
            json: args.json,
            timeout: std::time::Duration::from_secs(args.timeout),
        }))
    }

    /// Sends a request; returns the JSON body of a success, or [`Refused`]
    /// carrying the server's message and code.
    pub(super) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call_with(method, path, body, None).await
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<i64>,
    ) -> anyhow::Result<Value> {
        // A change is sent with a key of its own, and sent again with the
        // same key when no answer came: the server makes it once.
        let idempotency_key = (method != reqwest::Method::GET && method != reqwest::Method::HEAD)
            .then(|| format!("cli-{}", keyward_core::hash::hex(&keyward_core::ids::random_bytes::<16>())));
        let mut attempt = 1;
        let (status, value) = loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .timeout(self.timeout);
            if let Some(b) = &body {
                req = req.json(b);
            }
            if let Some(v) = if_match {
                req = req.header("if-match", format!("\"{v}\""));
            }
            if let Some(k) = &idempotency_key {
                req = req.header("idempotency-key", k);
            }
            let resp = match req.send().await {
                Err(e) if e.is_timeout() && idempotency_key.is_some() && attempt < ATTEMPTS => {
                    eprintln!(
                        "keyward did not answer within {} s; asking again with the same Idempotency-Key",
                        self.timeout.as_secs()
                    );
                    attempt += 1;
                    continue;
                }
                sent => sent.with_context(|| format!("cannot reach keyward at {}", self.base))?,
            };
            let status = resp.status();
            let wait = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let text = resp.text().await.unwrap_or_default();
            let value: Value =
                if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
            // The first try is still running on the server: wait for it.
            if value.get("code").and_then(Value::as_str) == Some("idempotency_key_in_progress") && attempt < ATTEMPTS {
                tokio::time::sleep(std::time::Duration::from_secs(wait.unwrap_or(1).min(self.timeout.as_secs()))).await;
                attempt += 1;
                continue;
            }
            break (status, value);
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value.get("error").and_then(Value::as_str).unwrap_or("request failed");
        let code = value.get("code").and_then(Value::as_str).unwrap_or("unknown");
        Err(Refused(format!("{message} ({code}, HTTP {})", status.as_u16())).into())
    }

    /// Every page of a list endpoint, with these filters.
    async fn list_all(&self, path: &str, filters: &[(&str, String)]) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "200".to_owned())];
            query.extend(filters.iter().cloned());
            query.extend(cursor.clone().map(|c| ("cursor", c)));
            let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
            let page = self.call(reqwest::Method::GET, &format!("{path}?{}", qs.join("&")), None).await?;
            all.extend(page.get("data").and_then(Value::as_array).cloned().unwrap_or_default());
            cursor = page.get("nextCursor").and_then(Value::as_str).map(str::to_owned);
            if cursor.is_none() {
                return Ok(all);
            }
        }
    }

    fn show_key(&self, key: &Value) {
        if self.json {
            outln!("{key}");
        } else {
            print_table(std::slice::from_ref(key));
        }
    }

    /// A key with its new secret (create, clone, roll).
    fn show_secret(&self, key: &Value) {
        if self.json {
            outln!("{key}");
        } else {
            print_table(std::slice::from_ref(key));
            outln!("\nSecret (shown only now; store it safely):\n\n    {}\n", s(key, "secret"));
        }
    }
}

pub(super) fn s<'a>(v: &'a Value, field: &str) -> &'a str {
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

/// Rows under a header, each column as wide as its widest cell.
pub(super) fn print_rows<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
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
    print_rows(["ID", "NAME", "KEY", "SCOPES", "STATE", "CREATED", "LAST USED", "EXPIRES"], &rows);
}

/// The JSON fields of the settings that were given.
fn settings_body(settings: KeySettings, replace_lists: bool) -> anyhow::Result<Map<String, Value>> {
    let mut body = Map::new();
    let mut put = |k: &str, v: Value| {
        body.insert(k.to_owned(), v);
    };
    if let Some(v) = settings.name {
        put("name", v.into());
    }
    if let Some(v) = settings.description {
        put("description", v.into());
    }
    for (field, list) in [
        ("scopes", settings.scopes),
        ("resources", settings.resources),
        ("allowedOrigins", settings.allowed_origins),
        ("allowedIps", settings.allowed_ips),
    ] {
        if !list.is_empty() || !replace_lists {
            put(field, list.into());
        }
    }
    if let Some(v) = settings.expires_at {
        put("expiresAt", v.into());
    }
    if let Some(v) = settings.read_only {
        put("readOnly", v.into());
    }
    if let Some(v) = settings.metadata {
        let parsed: Value = serde_json::from_str(&v).map_err(|_| Usage("--metadata must be a JSON object".into()))?;
        put("metadata", parsed);
    }
    if let Some(v) = settings.ratelimits {
        put("ratelimits", json_arg("--ratelimits", &v)?);
    }
    if let Some(v) = settings.external_id {
        put("externalId", v.into());
    }
    Ok(body)
}

/// A JSON option's value (exit status 2 when it is not JSON).
fn json_arg(flag: &str, text: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(text).map_err(|_| Usage(format!("{flag} must be JSON")))?)
}

fn print_identities(identities: &[Value]) {
    let rows: Vec<[String; 4]> = identities
        .iter()
        .map(|i| {
            let limits: Vec<String> = i["ratelimits"]
                .as_array()
                .map(|a| a.iter().map(|l| format!("{}={}/{}ms", s(l, "name"), l["limit"], l["durationMs"])).collect())
                .unwrap_or_default();
            [s(i, "id").into(), s(i, "externalId").into(), limits.join(","), s(i, "createdAt").into()]
        })
        .collect();
    print_rows(["ID", "EXTERNAL ID", "RATE LIMITS", "CREATED"], &rows);
}

pub async fn identities(cmd: IdentitiesCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let client = match &cmd {
        IdentitiesCommand::Create { client, .. }
        | IdentitiesCommand::List { client }
        | IdentitiesCommand::Get { client, .. }
        | IdentitiesCommand::Edit { client, .. }
        | IdentitiesCommand::Delete { client, .. } => client,
    };
    let Some(c) = Client::new(client)? else { return Ok(ExitCode::from(USAGE)) };
    let path = |id: &str| format!("/v1/identities/{}", urlencode(id));
    let show = |identity: Value| {
        if c.json {
            outln!("{identity}");
        } else {
            print_identities(&[identity]);
        }
    };
    let body = |settings: IdentitySettings| -> anyhow::Result<Map<String, Value>> {
        let mut body = Map::new();
        if let Some(m) = settings.meta {
            body.insert("meta".into(), json_arg("--meta", &m)?);
        }
        if let Some(r) = settings.ratelimits {
            body.insert("ratelimits".into(), json_arg("--ratelimits", &r)?);
        }
        Ok(body)
    };
    match cmd {
        IdentitiesCommand::Create { external_id, settings, .. } => {
            let mut body = body(settings)?;
            body.insert("externalId".into(), external_id.into());
            show(c.call(Method::POST, "/v1/identities", Some(Value::Object(body))).await?);
        }
        IdentitiesCommand::List { .. } => {
            let all = c.list_all("/v1/identities", &[]).await?;
            if c.json {
                outln!("{}", Value::Array(all));
            } else {
                print_identities(&all);
            }
        }
        IdentitiesCommand::Get { id, .. } => show(c.call(Method::GET, &path(&id), None).await?),
        IdentitiesCommand::Edit { id, settings, .. } => {
            let body = body(settings)?;
            if body.is_empty() {
                return Err(Usage("nothing to change: give --meta or --ratelimits".into()).into());
            }
            show(c.call(Method::PATCH, &path(&id), Some(Value::Object(body))).await?);
        }
        IdentitiesCommand::Delete { id, .. } => {
            c.call(Method::DELETE, &path(&id), None).await?;
            if c.json {
                outln!("{}", json!({ "deleted": id }));
            } else {
                outln!("Deleted {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A mistake in how the command was called: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// `-` reads the value from standard input (first line).
fn from_stdin_if_dash(value: String) -> anyhow::Result<String> {
    if value != "-" {
        return Ok(value);
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

fn key_path(id: &str, action: &str) -> String {
    format!("/v1/keys/{}{action}", urlencode(id))
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let client = match &cmd {
        KeysCommand::Create { client, .. }
        | KeysCommand::List { client, .. }
        | KeysCommand::Get { client, .. }
        | KeysCommand::Edit { client, .. }
        | KeysCommand::Clone { client, .. }
        | KeysCommand::Roll { client, .. }
        | KeysCommand::Deactivate { client, .. }
        | KeysCommand::Activate { client, .. }
        | KeysCommand::Revoke { client, .. }
        | KeysCommand::Delete { client, .. }
        | KeysCommand::Import { client, .. }
        | KeysCommand::Usage { client, .. }
        | KeysCommand::Hygiene { client }
        | KeysCommand::Verify { client, .. } => client,
    };
    let Some(c) = Client::new(client)? else { return Ok(ExitCode::from(USAGE)) };
    match cmd {
        KeysCommand::Create { settings, expires_in, environment, key_type, .. } => {
            let mut body = settings_body(settings, false)?;
            if let Some(days) = expires_in {
                body.insert("expiresIn".into(), days.into());
            }
            if let Some(env) = environment {
                body.insert("environment".into(), env.into());
            }
            if let Some(t) = key_type {
                body.insert("type".into(), t.into());
            }
            c.show_secret(&c.call(Method::POST, "/v1/keys", Some(Value::Object(body))).await?);
        }
        KeysCommand::List { state, name, key_type, .. } => {
            let mut filters = Vec::new();
            filters.extend(state.map(|s| ("state", s)));
            filters.extend(name.map(|n| ("name", n)));
            filters.extend(key_type.map(|t| ("type", t)));
            let keys = c.list_all("/v1/keys", &filters).await?;
            if c.json {
                outln!("{}", Value::Array(keys));
            } else {
                print_table(&keys);
            }
        }
        KeysCommand::Get { id, .. } => c.show_key(&c.call(Method::GET, &key_path(&id, ""), None).await?),
        KeysCommand::Edit { id, settings, no_expiry, if_match, .. } => {
            let mut body = settings_body(settings, true)?;
            if no_expiry {
                body.insert("expiresAt".into(), Value::Null);
            }
            if body.is_empty() {
                return Err(Usage("nothing to change: give at least one setting (see --help)".into()).into());
            }
            let key = c.call_with(Method::PATCH, &key_path(&id, ""), Some(Value::Object(body)), if_match).await?;
            c.show_key(&key);
        }
        KeysCommand::Clone { id, name, .. } => {
            let body = name.map(|n| json!({ "name": n }));
            c.show_secret(&c.call(Method::POST, &key_path(&id, "/clone"), body).await?);
        }
        KeysCommand::Roll { id, grace_seconds, .. } => {
            let body = grace_seconds.map(|g| json!({ "gracePeriodSeconds": g }));
            c.show_secret(&c.call(Method::POST, &key_path(&id, "/roll"), body).await?);
        }
        KeysCommand::Deactivate { id, .. } => {
            c.show_key(&c.call(Method::POST, &key_path(&id, "/deactivate"), None).await?)
        }
        KeysCommand::Activate { id, .. } => c.show_key(&c.call(Method::POST, &key_path(&id, "/activate"), None).await?),
        KeysCommand::Revoke { id, .. } => c.show_key(&c.call(Method::POST, &key_path(&id, "/revoke"), None).await?),
        KeysCommand::Delete { id, .. } => {
            c.call(Method::DELETE, &key_path(&id, ""), None).await?;
            if c.json {
                outln!("{}", json!({ "deleted": id }));
            } else {
                outln!("Deleted {id}");
            }
        }
        KeysCommand::Import { settings, plaintext, sha256, prefix, id, legacy, .. } => {
            let mut body = settings_body(settings, false)?;
            if let Some(p) = plaintext {
                body.insert("key".into(), from_stdin_if_dash(p)?.into());
            }
            for (field, v) in [("sha256", sha256), ("prefix", prefix), ("id", id)] {
                if let Some(v) = v {
                    body.insert(field.into(), v.into());
                }
            }
            body.insert("legacy".into(), legacy.into());
            c.show_key(&c.call(Method::POST, "/v1/keys/import", Some(Value::Object(body))).await?);
        }
        KeysCommand::Usage { id, period, granularity, .. } => {
            let mut query = Vec::new();
            query.extend(period.map(|p| format!("period={p}")));
            query.extend(granularity.map(|g| format!("granularity={g}")));
            let path = format!("{}?{}", key_path(&id, "/usage"), query.join("&"));
            let usage = c.call(Method::GET, &path, None).await?;
            if c.json {
                outln!("{usage}");
            } else {
                outln!(
                    "{}: {} uses since {}; last used {}",
                    s(&usage, "keyId"),
                    usage["total"],
                    s(&usage, "since"),
                    s(&usage, "lastUsed")
                );
                let data = usage["data"].as_array().cloned().unwrap_or_default();
                let rows: Vec<[String; 3]> = data
                    .iter()
                    .map(|d| {
                        let failed: u64 = d["counts"]
                            .as_object()
                            .map(|m| m.iter().filter(|(k, _)| *k != "VALID").filter_map(|(_, v)| v.as_u64()).sum())
                            .unwrap_or(0);
                        [s(d, "start").into(), d["total"].to_string(), failed.to_string()]
                    })
                    .collect();
                print_rows(["START", "USES", "REFUSED"], &rows);
            }
        }
        KeysCommand::Hygiene { .. } => {
            let report = c.call(Method::GET, "/v1/insights/keys", None).await?;
            if c.json {
                outln!("{report}");
            } else {
                let findings = report["findings"].as_array().cloned().unwrap_or_default();
                let rows: Vec<[String; 4]> = findings
                    .iter()
                    .map(|f| {
                        [
                            s(f, "kind").into(),
                            format!("{} ({})", s(f, "keyName"), s(f, "keyId")),
                            s(f, "detail").into(),
                            s(f, "recommendation").into(),
                        ]
                    })
                    .collect();
                print_rows(["FINDING", "KEY", "DETAIL", "RECOMMENDED"], &rows);
                outln!("{} findings", rows.len());
            }
        }
        KeysCommand::Verify { token, permission, resource, method, path, origin, ip, .. } => {
            let mut body = Map::new();
            body.insert("key".into(), from_stdin_if_dash(token)?.into());
            for (field, v) in [
                ("permission", permission),
                ("resource", resource),
                ("method", method),
                ("path", path),
                ("origin", origin),
                ("ip", ip),
            ] {
                if let Some(v) = v {
                    body.insert(field.into(), v.into());
                }
            }
            let answer = c.call(Method::POST, "/v1/keys/verify", Some(Value::Object(body))).await?;
            if c.json {
                outln!("{answer}");
            } else {
                outln!("{}: {} ({})", s(&answer, "code"), s(&answer, "message"), s(&answer, "keyId"));
            }
            if answer["valid"] != true {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A policy setting given as a number of days/keys or `none`.
fn number_or_none(flag: &str, v: &str) -> anyhow::Result<Value> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(Value::Null);
    }
    v.parse::<u32>().map(Value::from).map_err(|_| Usage(format!("{flag} takes a whole number or none")).into())
}

/// `keyward workspace get|set`.
pub async fn workspace(cmd: WorkspaceCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let (client, body) = match cmd {
        WorkspaceCommand::Get { client } => (client, None),
        WorkspaceCommand::ApplyExpiryPolicy { client } => {
            let Some(c) = Client::new(&client)? else { return Ok(ExitCode::from(USAGE)) };
            let applied = c.call(Method::POST, "/v1/workspace/apply-expiry-policy", None).await?;
            if c.json {
                outln!("{applied}");
            } else {
                outln!("{} keys now expire as the policy says", applied["updated"]);
            }
            return Ok(ExitCode::SUCCESS);
        }
        WorkspaceCommand::Set {
            client,
            name,
            max_keys,
            default_key_lifetime_days,
            max_key_lifetime_days,
            require_expiry,
        } => {
            let mut body = Map::new();
            if let Some(n) = name {
                body.insert("name".into(), n.into());
            }
            if let Some(r) = require_expiry {
                body.insert("requireExpiry".into(), r.into());
            }
            for (flag, field, v) in [
                ("--max-keys", "maxKeys", max_keys),
                ("--default-key-lifetime-days", "defaultKeyLifetimeDays", default_key_lifetime_days),
                ("--max-key-lifetime-days", "maxKeyLifetimeDays", max_key_lifetime_days),
            ] {
                if let Some(v) = v {
                    body.insert(field.into(), number_or_none(flag, &v)?);
                }
            }
            if body.is_empty() {
                return Err(Usage("nothing to change: give at least one setting (see --help)".into()).into());
            }
            (client, Some(Value::Object(body)))
        }
        _ => unreachable!("operator workspace commands are dispatched elsewhere"),
    };
    let Some(c) = Client::new(&client)? else { return Ok(ExitCode::from(USAGE)) };
    let ws = match body {
        None => c.call(Method::GET, "/v1/workspace", None).await?,
        Some(b) => c.call(Method::PATCH, "/v1/workspace", Some(b)).await?,
    };
    if c.json {
        outln!("{ws}");
    } else {
        let show = |v: &Value| if v.is_null() { "none".to_owned() } else { v.to_string().trim_matches('"').to_owned() };
        for (label, field) in [
            ("id", "id"),
            ("name", "name"),
            ("token prefix", "tokenPrefix"),
            ("max keys", "maxKeys"),
            ("default key lifetime (days)", "defaultKeyLifetimeDays"),
            ("max key lifetime (days)", "maxKeyLifetimeDays"),
            ("require expiry", "requireExpiry"),
        ] {
            outln!("{label:<28} {}", show(&ws[field]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
