//! Operator commands that work on the database directly: bootstrap and
//! workspace creation.

use std::process::ExitCode;

use anyhow::Context;

use keyward_server::workspaces::NewWorkspace;
use keyward_server::{ServerConfig, Services};

use crate::cli::{BootstrapArgs, StorageArgs};
use crate::settings::{Database, FileConfig, Storage};

pub async fn open_services(storage: &StorageArgs, file: &FileConfig) -> anyhow::Result<Services> {
    let storage = Storage::resolve(storage, file)?;
    let store = storage.database.open().await?;
    let config = ServerConfig { master_keys: storage.master_keys.clone(), ..ServerConfig::default() };
    Services::new(store, storage.hasher, &config).await
}

/// Prints a new workspace and its admin key: JSON for scripts, or words.
pub fn print_new_workspace(created: &NewWorkspace, json: bool) {
    outln!("{}", describe_new_workspace(created, json));
}

/// A new workspace and its admin key: JSON for scripts, or words.
pub fn describe_new_workspace(created: &NewWorkspace, json: bool) -> String {
    if json {
        let mut out = serde_json::json!({
            "workspaceId": created.workspace.id,
            "adminKey": created.secret.expose(),
        });
        if let Some(i) = &created.integrations {
            out["ftpUsername"] = created.workspace.site_id().into();
            out["ftpPassword"] = i.ftp_password.clone().into();
        }
        if let Some(owner) = &created.owner {
            out["ownerEmail"] = owner.member.email.clone().into();
            if let Some(password) = &owner.generated_password {
                out["ownerPassword"] = password.clone().into();
            }
        }
        out.to_string()
    } else {
        let mut text = format!(
            "Created workspace {} ({:?}) and its admin key {}.\n\
             The admin key is shown only now; store it safely:\n\n    {}\n",
            created.workspace.id,
            created.workspace.name,
            created.admin_key.id,
            created.secret.expose()
        );
        if let Some(owner) = &created.owner {
            text.push_str(&format!("\nIts owner signs in as {}", owner.member.email));
            match &owner.generated_password {
                Some(password) => text.push_str(&format!(" with this password, shown only now:\n\n    {password}\n")),
                None => text.push_str(" with the password given.\n"),
            }
        }
        if let Some(i) = &created.integrations {
            text.push_str(&format!(
                "\nFTP access: username {}, with this password, shown only now:\n\n    {}\n",
                created.workspace.site_id(),
                i.ftp_password
            ));
        }
        text
    }
}

pub async fn bootstrap(args: BootstrapArgs, file: &FileConfig) -> anyhow::Result<ExitCode> {
    let services = open_services(&args.storage, file).await?;
    match services.workspaces.bootstrap(&args.name, &args.owner.spec()).await? {
        Some(created) => {
            print_new_workspace(&created, args.json);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "keyward is already bootstrapped: this database has a workspace. Nothing was changed. \
                 Use `keyward workspace create NAME` to add another workspace."
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn create_workspace(
    name: &str,
    storage: &StorageArgs,
    json: bool,
    file: &FileConfig,
) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    let created = services.workspaces.create_with_admin_key(name).await?;
    print_new_workspace(&created, json);
    Ok(ExitCode::SUCCESS)
}

/// `keyward member set-password`.
pub async fn set_member_password(
    email: &str,
    password: Option<String>,
    storage: &StorageArgs,
    file: &FileConfig,
) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    let generated = password.is_none();
    let who = keyward_server::principal::Principal::system("");
    match services.members.set_password(&who, email, password).await {
        Ok(password) if generated => {
            outln!(
                "The password of {email} is now the following, shown only now; their sessions have ended:\n\n    {password}\n"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => {
            outln!("The password of {email} is set; their sessions have ended.");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{} ({})", e.message, e.code);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `keyward member invite`: an invitation made by the operator.
pub async fn invite_member(
    email: &str,
    workspace_id: &str,
    name: Option<String>,
    roles: &[String],
    json: bool,
    storage: &StorageArgs,
    file: &FileConfig,
) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    let known = services.store.get_workspace(workspace_id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if known.is_none() {
        eprintln!("No workspace has that id (keyward workspace list shows them) (workspace_not_found)");
        return Ok(ExitCode::FAILURE);
    }
    let who = keyward_server::principal::Principal::system(workspace_id);
    let name = name.unwrap_or_else(|| email.split('@').next().unwrap_or(email).to_owned());
    match services.members.invite(&who, email, &name, roles).await {
        Ok(new) if json => {
            let out = serde_json::json!({
                "invitationId": new.invitation.id,
                "token": new.token,
                "expiresAt": new.invitation.expires_at,
            });
            outln!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(new) => {
            outln!(
                "Invited {} to {workspace_id} as {}. The invitation token, shown only now (valid until {}):\n\n    {}\n\n\
                 They redeem it at /join?token=… in the console, or with POST /v1/invitations/accept.",
                new.invitation.email,
                new.invitation.roles.join(", "),
                new.invitation.expires_at.to_rfc3339(),
                new.token
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{} ({})", e.message, e.code);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `keyward audit checkpoint`: a signed statement of where a workspace's
/// chain stands, printed as JSON.
pub async fn audit_checkpoint(
    workspace_id: &str,
    storage: &StorageArgs,
    file: &FileConfig,
) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    if services.store.get_workspace(workspace_id).await?.is_none() {
        eprintln!("No workspace {workspace_id} (keyward workspace list shows them)");
        return Ok(ExitCode::FAILURE);
    }
    let checkpoint = services.audit.checkpoint(workspace_id).await.map_err(|e| anyhow::anyhow!(e.message))?;
    outln!("{}", serde_json::to_string_pretty(&checkpoint)?);
    Ok(ExitCode::SUCCESS)
}

/// `keyward audit verify`: walks the chains; exit 1 at the first break.
pub async fn audit_verify(
    workspace_id: Option<String>,
    checkpoint: Option<&std::path::Path>,
    storage: &StorageArgs,
    file: &FileConfig,
) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    let checkpoint: Option<keyward_core::audit::Checkpoint> = match checkpoint {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("{} is not a checkpoint", path.display()))?)
        }
        None => None,
    };
    let workspaces = match (&workspace_id, &checkpoint) {
        (Some(id), Some(c)) if *id != c.workspace => {
            eprintln!("The checkpoint is of workspace {}, not {id}", c.workspace);
            return Ok(ExitCode::FAILURE);
        }
        (Some(id), _) => vec![id.clone()],
        (None, Some(c)) => vec![c.workspace.clone()],
        (None, None) => services.audit.workspaces().await.map_err(|e| anyhow::anyhow!(e.message))?,
    };
    let mut failed = false;
    for ws in workspaces {
        let cp = checkpoint.as_ref().filter(|c| c.workspace == ws);
        match services.audit.verify(&ws, cp).await {
            Ok(Ok(n)) => {
                outln!("{ws}: {n} entries, chain intact{}", if cp.is_some() { ", checkpoint reached" } else { "" })
            }
            Ok(Err(broken)) => {
                outln!("{ws}: BROKEN: {broken}");
                failed = true;
            }
            Err(e) => {
                eprintln!("{ws}: {} ({})", e.message, e.code);
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `keyward master-key rotate`: every sealed secret re-wrapped under the
/// first master key given.
pub async fn rotate_master_key(storage: &StorageArgs, file: &FileConfig) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    if !services.keys.can_seal() {
        anyhow::bail!(
            "give the master keys: --master-key-file (new key first, old after) or KEYWARD_MASTER_KEY=NEW,OLD"
        );
    }
    let done = services.keys.rewrap_sealed().await?;
    let in_use = services.store.master_keys_in_use().await?;
    outln!(
        "Re-wrapped {done} recoverable secret{} under the first master key given. Master keys in use now: {}. \
         Keys not in use can be removed from the servers' configuration.",
        if done == 1 { "" } else { "s" },
        if in_use.is_empty() { "none".to_owned() } else { in_use.join(", ") }
    );
    Ok(ExitCode::SUCCESS)
}

/// `keyward signing-key rotate`.
pub async fn rotate_signing_key(
    storage: &StorageArgs,
    signing: &crate::cli::SigningArgs,
    file: &FileConfig,
) -> anyhow::Result<ExitCode> {
    let resolved = Storage::resolve(storage, file)?;
    if resolved.master_keys.is_none() {
        anyhow::bail!("signing keys are kept sealed: give the master key (--master-key-file or KEYWARD_MASTER_KEY)");
    }
    let store = resolved.database.open().await?;
    let oauth = crate::settings::oauth_config(signing, None, None, file)?;
    let config = ServerConfig { master_keys: resolved.master_keys.clone(), oauth, ..ServerConfig::default() };
    let services = Services::new(store, resolved.hasher, &config).await?;
    let kid = services.oauth.signer().rotate().await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    outln!(
        "Signing key {kid} ({}) now signs access tokens; older keys stay published until their tokens expire.",
        config.oauth.algorithm.as_str()
    );
    if resolved.database.is_sqlite() {
        outln!(
            "A keyward serving this SQLite database accepts the new key's tokens at once and signs with it within a \
             minute (SQLite sends no notices); on PostgreSQL every node switches at once."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyward signing-key list`.
pub async fn list_signing_keys(storage: &StorageArgs, file: &FileConfig) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    let keys = services.oauth.signer().published();
    if keys.is_empty() {
        outln!("No signing key yet: the first token issued makes one.");
    }
    for key in keys {
        let state = match (key.retired_at, key.drop_after) {
            (None, _) => "signing".to_owned(),
            (Some(at), Some(until)) => format!("retired {}, published until {}", at.to_rfc3339(), until.to_rfc3339()),
            (Some(at), None) => format!("retired {}", at.to_rfc3339()),
        };
        outln!("{}  {}  created {}  {state}", key.kid, key.algorithm.as_str(), key.created_at.to_rfc3339());
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyward migrate`: opening the store applies pending migrations.
pub async fn migrate(storage: &StorageArgs, file: &FileConfig) -> anyhow::Result<ExitCode> {
    let database = Database::resolve(storage, file)?;
    let store = database.open().await?;
    let version = store.schema_version().await?;
    outln!("database {}: schema at migration {version}, up to date", keyward_store::mask_url(&database.url));
    Ok(ExitCode::SUCCESS)
}

/// `keyward workspace list`.
pub async fn list_workspaces(storage: &StorageArgs, json: bool, file: &FileConfig) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    let all = services.workspaces.list_all().await?;
    if json {
        let rows: Vec<_> = all
            .iter()
            .map(|(ws, keys)| {
                serde_json::json!({"id": ws.id, "name": ws.name, "liveKeys": keys, "createdAt": ws.created_at})
            })
            .collect();
        outln!("{}", serde_json::Value::Array(rows));
    } else if all.is_empty() {
        outln!("No workspaces: `keyward bootstrap` creates the first.");
    } else {
        outln!("{:<22}  {:<30}  {:>9}  CREATED", "ID", "NAME", "LIVE KEYS");
        for (ws, keys) in &all {
            let name: String = ws.name.chars().take(30).collect();
            outln!("{:<22}  {:<30}  {:>9}  {}", ws.id, name, keys, ws.created_at.format("%Y-%m-%d %H:%M UTC"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `keyward workspace admin-key WORKSPACE_ID`.
pub async fn admin_key(
    workspace_id: &str,
    storage: &StorageArgs,
    json: bool,
    file: &FileConfig,
) -> anyhow::Result<ExitCode> {
    let services = open_services(storage, file).await?;
    match services.workspaces.mint_admin_key(workspace_id).await {
        Ok(minted) => {
            if json {
                print_new_workspace(&minted, true);
            } else {
                outln!(
                    "Minted admin key {} ({:?}) for workspace {} ({:?}).\n\
                     It is shown only now; store it safely:\n\n    {}\n",
                    minted.admin_key.id,
                    minted.admin_key.name,
                    minted.workspace.id,
                    minted.workspace.name,
                    minted.secret.expose()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `keyward backup FILE`: an online, consistent copy (SQLite).
pub async fn backup(path: &std::path::Path, storage: &StorageArgs, file: &FileConfig) -> anyhow::Result<ExitCode> {
    let database = Database::resolve(storage, file)?;
    let store = database.open().await?;
    match store.backup_to(path).await {
        Ok(()) => {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            outln!(
                "backed up {} to {} ({size} bytes). Keep the hash key ({}) with it.",
                keyward_store::mask_url(&database.url),
                path.display(),
                hash_key_location(storage, file, &database)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn hash_key_location(storage: &StorageArgs, file: &FileConfig, database: &Database) -> String {
    match (&storage.hash_key, storage.hash_key_file.as_ref().or(file.hash_key_file.as_ref())) {
        (Some(_), _) => "KEYWARD_HASH_KEY".to_owned(),
        (None, Some(path)) => path.display().to_string(),
        (None, None) => database.data_dir.join("hash.key").display().to_string(),
    }
}

/// `keyward restore FILE`: puts a backup in place of the SQLite database.
pub async fn restore(
    path: &std::path::Path,
    storage: &StorageArgs,
    force: bool,
    file: &FileConfig,
) -> anyhow::Result<ExitCode> {
    let resolved = Storage::resolve(storage, file)?;
    let url = &resolved.database.url;
    if !url.starts_with("sqlite:") {
        eprintln!(
            "error: keyward restore replaces SQLite databases; for PostgreSQL run \
             pg_restore --clean --dbname 'URL' FILE"
        );
        return Ok(ExitCode::FAILURE);
    }
    let fingerprint = match keyward_store::sqlite::backup_meta(path, "hash_key_fingerprint").await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let ours = resolved.hasher.fingerprint();
    if let Some(theirs) = fingerprint.filter(|f| *f != ours) {
        eprintln!(
            "error: the backup was made with another hash key (fingerprint {theirs}; this keyward's is {ours}): \
             its keys would not verify. Restore it with the hash key it was made with (--hash-key-file)."
        );
        return Ok(ExitCode::FAILURE);
    }
    let target = keyward_store::sqlite::database_path(url)?;
    if target.exists() && !force {
        let store = resolved.database.open().await?;
        let workspaces = store.count_workspaces().await?;
        if workspaces > 0 {
            eprintln!(
                "error: {} holds {workspaces} workspace(s); stop keyward and pass --force to replace it with the backup",
                target.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    let target = keyward_store::sqlite::replace_database(url, path)?;
    outln!("restored {} from {}", target.display(), path.display());
    Ok(ExitCode::SUCCESS)
}
