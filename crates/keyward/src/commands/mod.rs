//! Dispatch from parsed flags to the command that runs them.

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{
    AuditCommand, Cli, Command, MasterKeyCommand, MemberCommand, SigningKeyCommand, StorageArgs, WorkspaceCommand,
};
use crate::settings::FileConfig;

mod admin;
mod integrations;
mod keys;
mod pgp;
mod serve;

pub use keys::{Refused, USAGE, Usage};

fn config(storage: &StorageArgs) -> anyhow::Result<FileConfig> {
    FileConfig::load(storage.config.as_deref())
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let file = config(&args.storage)?;
            serve::run(*args, &file).await
        }
        Command::Bootstrap(args) => {
            let file = config(&args.storage)?;
            admin::bootstrap(args, &file).await
        }
        Command::Workspace(WorkspaceCommand::Create { name, storage, json }) => {
            admin::create_workspace(&name, &storage, json, &config(&storage)?).await
        }
        Command::Workspace(WorkspaceCommand::List { storage, json }) => {
            admin::list_workspaces(&storage, json, &config(&storage)?).await
        }
        Command::Workspace(WorkspaceCommand::AdminKey { workspace_id, storage, json }) => {
            admin::admin_key(&workspace_id, &storage, json, &config(&storage)?).await
        }
        Command::Workspace(cmd) => keys::workspace(cmd).await,
        Command::Keys(cmd) => keys::run(cmd).await,
        Command::Identities(cmd) => keys::identities(cmd).await,
        Command::Pgp(cmd) => pgp::run(cmd).await,
        Command::Integrations(cmd) => integrations::run(cmd).await,
        Command::FtpAuth(args) => Ok(integrations::ftp_auth(args).await),
        Command::MasterKey(MasterKeyCommand::Generate) => {
            outln!("{}", keyward_core::hash::hex(&keyward_core::ids::random_bytes::<32>()));
            Ok(ExitCode::SUCCESS)
        }
        Command::MasterKey(MasterKeyCommand::Rotate { storage }) => {
            admin::rotate_master_key(&storage, &config(&storage)?).await
        }
        Command::SigningKey(SigningKeyCommand::Rotate { storage, signing }) => {
            admin::rotate_signing_key(&storage, &signing, &config(&storage)?).await
        }
        Command::SigningKey(SigningKeyCommand::List { storage }) => {
            admin::list_signing_keys(&storage, &config(&storage)?).await
        }
        Command::Member(MemberCommand::Invite { email, workspace_id, name, roles, json, storage }) => {
            admin::invite_member(&email, &workspace_id, name, &roles, json, &storage, &config(&storage)?).await
        }
        Command::Member(MemberCommand::SetPassword { email, password, storage }) => {
            admin::set_member_password(&email, password, &storage, &config(&storage)?).await
        }
        Command::Audit(AuditCommand::Checkpoint { workspace_id, storage }) => {
            admin::audit_checkpoint(&workspace_id, &storage, &config(&storage)?).await
        }
        Command::Audit(AuditCommand::Verify { workspace_id, checkpoint, storage }) => {
            admin::audit_verify(workspace_id, checkpoint.as_deref(), &storage, &config(&storage)?).await
        }
        Command::Migrate { storage } => admin::migrate(&storage, &config(&storage)?).await,
        Command::Backup { file: path, storage } => admin::backup(&path, &storage, &config(&storage)?).await,
        Command::Restore { file: path, storage, force } => {
            admin::restore(&path, &storage, force, &config(&storage)?).await
        }
        Command::Openapi => {
            outln!("{}", keyward_server::api::openapi_document().to_pretty_json()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "keyward", &mut script);
            outln!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(ExitCode::SUCCESS)
        }
    }
}
