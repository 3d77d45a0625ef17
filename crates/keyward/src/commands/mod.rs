//! Dispatch from parsed flags to the command that runs them.

use std::process::ExitCode;

use crate::cli::{Cli, Command, WorkspaceCommand};
use crate::settings::FileConfig;

mod admin;
mod keys;
mod serve;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let file = FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => serve::run(args, &file).await,
        Command::Bootstrap(args) => admin::bootstrap(args, &file).await,
        Command::Workspace(WorkspaceCommand::Create { name, storage, json }) => {
            admin::create_workspace(&name, &storage, json, &file).await
        }
        Command::Workspace(WorkspaceCommand::List { storage, json }) => {
            admin::list_workspaces(&storage, json, &file).await
        }
        Command::Workspace(WorkspaceCommand::AdminKey { workspace_id, storage, json }) => {
            admin::admin_key(&workspace_id, &storage, json, &file).await
        }
        Command::Keys(cmd) => keys::run(cmd).await,
        Command::Migrate { storage } => admin::migrate(&storage, &file).await,
        Command::Backup { file: path, storage } => admin::backup(&path, &storage, &file).await,
        Command::Restore { file: path, storage, force } => admin::restore(&path, &storage, force, &file).await,
        Command::Openapi => {
            println!("{}", keyward_server::api::openapi_document().to_pretty_json()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
