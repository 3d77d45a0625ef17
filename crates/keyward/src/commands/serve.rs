//! `keyward serve`: the HTTP server.

use std::process::ExitCode;

use keyward_server::{Application, shutdown_signal, telemetry};

use super::admin::describe_new_workspace;
use crate::cli::ServeArgs;
use crate::settings::{FileConfig, ServeSettings};

pub async fn run(args: ServeArgs, file: &FileConfig) -> anyhow::Result<ExitCode> {
    let settings = ServeSettings::resolve(&args, file)?;
    telemetry::init_logging(settings.log_format, &settings.log_filter);
    let store = settings.storage.database.open().await?;
    let app = Application::build(settings.server.clone(), store, settings.storage.hasher).await?;
    if let Some(created) = app.services().workspaces.bootstrap(&args.workspace_name, &args.owner.spec()).await? {
        // Printed on stdout, never logged: logs must not carry secrets.
        say(&describe_new_workspace(&created, false));
    }
    // Listening for SIGINT/SIGTERM before saying so: a stop sent right
    // after the address is printed drains and flushes like any other.
    let stop = shutdown_signal();
    let addr = app.local_addr();
    if let Some(fa) = app.forward_auth_addr() {
        say(&format!("keyward forward-auth listening on http://{fa}"));
    }
    // Said once, on stdout (scripts read the address from this line).
    say(&format!("keyward listening on http://{addr}"));
    say(match &settings.server.redis_url {
        Some(url) => {
            format!("Rate limits: shared through Redis at {} (exact across nodes).", keyward_store::mask_url(url))
        }
        None => "Rate limits: counted by this node alone (give --redis-url to share them between nodes).".to_owned(),
    }
    .as_str());
    say("Press Ctrl-C (or send SIGTERM) to stop; pending use counts are written first.");
    app.run_until(stop).await?;
    tracing::info!("keyward stopped");
    Ok(ExitCode::SUCCESS)
}

/// A line on stdout for whoever started the server. Unlike the one-shot
/// commands, a server goes on serving when nobody reads its stdout any more.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
