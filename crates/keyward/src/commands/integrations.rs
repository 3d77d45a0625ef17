//! `keyward integrations …` through a running server's /v1 API, and
//! `keyward ftp-auth`, pure-ftpd's external authentication program.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::keys::{Client, USAGE, s};
use crate::cli::{FtpAuthArgs, IntegrationsCommand};

pub async fn run(cmd: IntegrationsCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let client = match &cmd {
        IntegrationsCommand::Show { client } | IntegrationsCommand::FtpRotate { client } => client,
    };
    let Some(c) = Client::new(client)? else { return Ok(ExitCode::from(USAGE)) };
    match cmd {
        IntegrationsCommand::Show { .. } => {
            let body = c.call(Method::GET, "/v1/integrations", None).await?;
            if c.json {
                outln!("{body}");
            } else {
                let js = &body["javascriptKey"];
                let ftp = &body["ftp"];
                outln!("JavaScript API key   {}  ({})", s(js, "key"), s(js, "id"));
                match body.get("restKey").filter(|k| !k.is_null()) {
                    Some(rest) => outln!(
                        "Default REST API key {}  ({}, {})",
                        s(rest, "maskedKey"),
                        s(rest, "id"),
                        s(rest, "state")
                    ),
                    None => outln!("Default REST API key none (POST /v1/integrations/rest-key makes one)"),
                }
                let host = ftp.get("host").and_then(Value::as_str).map(|h| format!(" on {h}")).unwrap_or_default();
                let enabled = if ftp["enabled"] == json!(true) { "enabled" } else { "disabled" };
                let locked = if ftp["locked"] == json!(true) { ", locked" } else { "" };
                outln!("FTP                  username {}{host}  ({enabled}{locked})", s(ftp, "username"));
            }
        }
        IntegrationsCommand::FtpRotate { .. } => {
            let body = c.call(Method::POST, "/v1/integrations/ftp/rotate", None).await?;
            if c.json {
                outln!("{body}");
            } else {
                outln!(
                    "FTP username {}; its new password, shown only now:\n\n    {}\n",
                    s(&body, "username"),
                    s(&body, "password")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What pure-authd reads: `auth_ok:1` and the session's account, or a
/// refusal (`0`: keyward said no; `-1`: keyward could not answer).
pub async fn ftp_auth(args: FtpAuthArgs) -> ExitCode {
    let answer = match ask(&args).await {
        Ok(Some(home)) => {
            let dir = args.root.join(home);
            format!("auth_ok:1\nuid:{}\ngid:{}\ndir:{}\nend", args.uid, args.gid, dir.display())
        }
        Ok(None) => "auth_ok:0\nend".to_owned(),
        Err(why) => {
            eprintln!("keyward ftp-auth: {why}");
            "auth_ok:-1\nend".to_owned()
        }
    };
    outln!("{answer}");
    ExitCode::SUCCESS
}

/// The accepted user's home (a site id), `None` when refused, or why
/// keyward gave no answer.
async fn ask(args: &FtpAuthArgs) -> Result<Option<String>, String> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let key = args.key.clone().filter(|k| !k.trim().is_empty()).ok_or("no API key: set KEYWARD_API_KEY")?;
    let mut body = json!({"username": var("AUTHD_ACCOUNT"), "password": var("AUTHD_PASSWORD")});
    let ip = var("AUTHD_REMOTE_IP");
    if !ip.is_empty() {
        body["ip"] = ip.into();
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let url = format!("{}/v1/ftp/authenticate", args.url.trim_end_matches('/'));
    let resp = http.post(url).bearer_auth(key).json(&body).send().await.map_err(|e| format!("asking keyward: {e}"))?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(format!("keyward answered HTTP {}", status.as_u16()));
    }
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        // A refusal of the caller itself is a misconfiguration, not a login.
        if status.as_u16() == 403 || (status.as_u16() == 401 && value["code"] != json!("invalid_credentials")) {
            return Err(format!("keyward refused this program's key: {}", s(&value, "code")));
        }
        return Ok(None);
    }
    // The home is a site id: nothing that could leave the root.
    let home = value["home"].as_str().unwrap_or_default();
    if home.is_empty() || home.starts_with('.') || home.contains('/') {
        return Err("keyward answered an unusable home".to_owned());
    }
    Ok(Some(home.to_owned()))
}
