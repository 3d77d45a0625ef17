//! Second stage of configuration: flags and environment (already merged by
//! clap) over the TOML file over defaults, validated; and the hash key,
//! read or generated.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use keyward_core::hash::{MIN_KEY_LEN, SecretHasher, hex};
use keyward_server::ServerConfig;
use keyward_server::api::forward_auth::ForwardAuthConfig;
use keyward_server::telemetry::LogFormat;
use keyward_store::{Store, StoreOptions};
use reqwest::header::HeaderName;
use serde::Deserialize;

use crate::cli::{LogFormatArg, ServeArgs, StorageArgs};

/// The TOML file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<std::net::SocketAddr>,
    pub database_url: Option<String>,
    pub database_pool_size: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub hash_key_file: Option<PathBuf>,
    pub master_key_file: Option<PathBuf>,
    pub log_format: Option<LogFormatArg>,
    pub log_level: Option<String>,
    pub usage_flush_interval_ms: Option<u64>,
    pub cache_capacity: Option<usize>,
    pub negative_cache_ttl_ms: Option<u64>,
    pub cache_max_age_ms: Option<u64>,
    pub ip_failure_limit: Option<u32>,
    pub retention_days: Option<u32>,
    pub rotation_days: Option<u32>,
    pub redis_url: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub forward_auth_listen: Option<std::net::SocketAddr>,
    pub grpc_listen: Option<std::net::SocketAddr>,
    pub forward_auth_key_header: Option<String>,
    pub forward_auth_key_query: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub public_url: Option<String>,
    pub ftp_host: Option<String>,
    pub webhook_allow_hosts: Option<Vec<String>>,
    pub webhook_concurrency: Option<usize>,
    pub webhook_timeout_seconds: Option<u64>,
    pub webhook_retention_days: Option<u32>,
    pub idempotency_hours: Option<u32>,
    pub leak_public_keys: Option<PathBuf>,
    pub access_token_lifetime: Option<u32>,
    pub refresh_token_lifetime_days: Option<u32>,
    pub token_algorithm: Option<crate::cli::TokenAlgorithmArg>,
    pub signing_key_rotation_days: Option<u32>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

pub const DEFAULT_DATA_DIR: &str = "keyward-data";

/// The database, resolved.
#[derive(Debug)]
pub struct Database {
    pub url: String,
    pub options: StoreOptions,
    /// Absolute; holds the SQLite database (by default) and the hash key.
    pub data_dir: PathBuf,
}

impl Database {
    /// Whether the data lives in SQLite (a single node: no change notices).
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    pub fn resolve(args: &StorageArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let url = match args.database_url.clone().or_else(|| file.database_url.clone()) {
            Some(url) => url,
            None => {
                let dir = data_dir(args, file)?;
                create_private_dir(&dir)?;
                format!("sqlite://{}", dir.join("keyward.db").display())
            }
        };
        let data_dir = data_dir(args, file)?;
        let pool_size =
            args.database_pool_size.or(file.database_pool_size).unwrap_or(StoreOptions::default().pool_size);
        if !(1..=1000).contains(&pool_size) {
            bail!("the database pool size must be between 1 and 1000");
        }
        Ok(Database { url, options: StoreOptions { pool_size }, data_dir })
    }

    /// Opens the store (applying pending migrations) and says on stderr
    /// where the data is: the data directory, the database (password
    /// masked), and whether it is new or what it holds. A failure is one
    /// line naming the database and the cause.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        let masked = keyward_store::mask_url(&self.url);
        let store = keyward_store::open_with(&self.url, &self.options)
            .await
            .map_err(|e| anyhow::anyhow!("database {masked}: {e}"))?;
        let workspaces = store.count_workspaces().await.map_err(|e| anyhow::anyhow!("database {masked}: {e}"))?;
        let state = if workspaces == 0 {
            "new, empty".to_owned()
        } else {
            let keys = store.count_keys().await.map_err(|e| anyhow::anyhow!("database {masked}: {e}"))?;
            format!("existing: {} and {}", plural(workspaces, "workspace"), plural(keys, "key"))
        };
        eprintln!("keyward: data directory {}; database {masked} ({state})", self.data_dir.display());
        Ok(store)
    }
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// The data directory, absolute (so the message about it is unambiguous).
fn data_dir(args: &StorageArgs, file: &FileConfig) -> anyhow::Result<PathBuf> {
    let dir =
        args.data_dir.clone().or_else(|| file.data_dir.clone()).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    std::path::absolute(&dir).with_context(|| format!("data directory {}", dir.display()))
}

/// Where data lives, resolved.
#[derive(Debug)]
pub struct Storage {
    pub database: Database,
    pub hasher: SecretHasher,
    /// The master keys, current first, when configured.
    pub master_keys: Option<std::sync::Arc<keyward_core::sealed::Keyring>>,
}

impl Storage {
    pub fn resolve(args: &StorageArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let database = Database::resolve(args, file)?;
        let data_dir = database.data_dir.clone();
        if args.hash_key.is_none() && args.hash_key_file.is_none() && file.hash_key_file.is_none() {
            create_private_dir(&data_dir)?;
        }
        let key = match (&args.hash_key, args.hash_key_file.as_ref().or(file.hash_key_file.as_ref())) {
            (Some(hex_key), _) => decode_key(hex_key).context("KEYWARD_HASH_KEY / --hash-key")?,
            (None, Some(path)) => read_key_file(path)?,
            (None, None) => {
                let path = data_dir.join("hash.key");
                let (text, _) = read_or_create_secret_file(&path, "hash key")?;
                decode_key(&text).with_context(|| format!("hash key file {}", path.display()))?
            }
        };
        let hasher = SecretHasher::new(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
        let master_keys = match (&args.master_key, args.master_key_file.as_ref().or(file.master_key_file.as_ref())) {
            (Some(text), _) => Some(parse_master_keys(text).context("KEYWARD_MASTER_KEY / --master-key")?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading master key file {}", path.display()))?;
                Some(parse_master_keys(&text).with_context(|| format!("master key file {}", path.display()))?)
            }
            // Like the hash key: generated into the data directory on first
            // use, so recoverable keys, OAuth and PGP private keys work at once.
            (None, None) => {
                create_private_dir(&data_dir)?;
                let path = data_dir.join("master.key");
                let (text, created) = read_or_create_secret_file(&path, "master key")?;
                if created {
                    eprintln!(
                        "Generated a master key at {} (mode 0600): it seals recoverable secrets, signing keys and \
                         PGP private keys. Keep it apart from backups of the database; --master-key-file holds it \
                         elsewhere.",
                        path.display()
                    );
                }
                Some(parse_master_keys(&text).with_context(|| format!("master key file {}", path.display()))?)
            }
        };
        Ok(Storage { database, hasher, master_keys })
    }
}

fn parse_master_keys(text: &str) -> anyhow::Result<std::sync::Arc<keyward_core::sealed::Keyring>> {
    keyward_core::sealed::Keyring::parse(text).map(std::sync::Arc::new).map_err(|e| anyhow::anyhow!("{}", e.message))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("creating data directory {}", dir.display()))
}

fn decode_key(text: &str) -> anyhow::Result<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the hash key must be hexadecimal");
    }
    let bytes: Vec<u8> =
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("checked hex")).collect();
    if bytes.len() < MIN_KEY_LEN {
        bail!("the hash key must be at least {MIN_KEY_LEN} bytes ({} hex characters)", MIN_KEY_LEN * 2);
    }
    Ok(bytes)
}

fn read_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading hash key file {}", path.display()))?;
    decode_key(&text).with_context(|| format!("hash key file {}", path.display()))
}

/// Reads a key file's text, or creates the file (mode 0600, never
/// overwriting) with 32 bytes from the OS CSPRNG as hex; also says whether
/// it was created now.
fn read_or_create_secret_file(path: &Path, what: &str) -> anyhow::Result<(String, bool)> {
    let read = || std::fs::read_to_string(path).with_context(|| format!("reading {what} file {}", path.display()));
    if path.exists() {
        return Ok((read()?, false));
    }
    let key = keyward_core::ids::random_bytes::<32>();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut f) => {
            use std::io::Write;
            let text = hex(&key);
            writeln!(f, "{text}").with_context(|| format!("writing {}", path.display()))?;
            f.sync_all()?;
            Ok((text, true))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read()?, false)),
        Err(e) => Err(e).with_context(|| format!("creating {what} file {}", path.display())),
    }
}

fn forward_auth(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<ForwardAuthConfig> {
    let mut config = ForwardAuthConfig::default();
    if let Some(h) = args.forward_auth_key_header.as_ref().or(file.forward_auth_key_header.as_ref()) {
        config.key_header = match h.as_str() {
            "" | "none" => None,
            name => Some(HeaderName::try_from(name.to_ascii_lowercase()).context("--forward-auth-key-header")?),
        };
    }
    config.key_query_param = args.forward_auth_key_query.clone().or_else(|| file.forward_auth_key_query.clone());
    if let Some(list) = args.trusted_proxies.as_ref().or(file.trusted_proxies.as_ref()) {
        config.trusted_proxies = list
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| keyward_core::origin::parse_ip_range(s).map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}")))
            .collect::<anyhow::Result<_>>()?;
    }
    Ok(config)
}

fn webhook_delivery(
    args: &ServeArgs,
    file: &FileConfig,
) -> anyhow::Result<keyward_server::webhooks::deliver::DeliveryConfig> {
    let defaults = keyward_server::webhooks::deliver::DeliveryConfig::default();
    let concurrency = args.webhook_concurrency.or(file.webhook_concurrency).unwrap_or(defaults.concurrency);
    if concurrency > 256 {
        bail!("the webhook concurrency must be between 0 and 256");
    }
    let timeout = args.webhook_timeout_seconds.or(file.webhook_timeout_seconds).unwrap_or(10);
    if !(1..=60).contains(&timeout) {
        bail!("the webhook timeout must be between 1 and 60 seconds");
    }
    let retention = args.webhook_retention_days.or(file.webhook_retention_days).unwrap_or(30);
    if !(1..=400).contains(&retention) {
        bail!("the webhook retention must be between 1 and 400 days");
    }
    Ok(keyward_server::webhooks::deliver::DeliveryConfig {
        concurrency,
        timeout: Duration::from_secs(timeout),
        retention: chrono::Duration::days(i64::from(retention)),
        ..defaults
    })
}

/// Everything `serve` needs.
pub struct ServeSettings {
    pub server: ServerConfig,
    pub storage: Storage,
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl ServeSettings {
    pub fn resolve(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Self> {
        let defaults = ServerConfig::default();
        let flush_ms = args.usage_flush_interval_ms.or(file.usage_flush_interval_ms).unwrap_or(1000);
        if !(10..=60_000).contains(&flush_ms) {
            bail!("usage flush interval must be between 10 and 60000 ms");
        }
        let max_age_ms = args.cache_max_age_ms.or(file.cache_max_age_ms);
        if max_age_ms.is_some_and(|ms| !(100..=86_400_000).contains(&ms)) {
            bail!("the cache max age must be between 100 and 86400000 ms");
        }
        let retention_days = args.retention_days.or(file.retention_days).unwrap_or(defaults.retention_days);
        if !(1..=400).contains(&retention_days) {
            bail!("the retention must be between 1 and 400 days");
        }
        let rotation_days = args.rotation_days.or(file.rotation_days).unwrap_or(defaults.rotation_days);
        if !(1..=3650).contains(&rotation_days) {
            bail!("the rotation period must be between 1 and 3650 days");
        }
        let webhook_delivery = webhook_delivery(args, file)?;
        let idempotency_hours = args.idempotency_hours.or(file.idempotency_hours).unwrap_or(24);
        if !(1..=720).contains(&idempotency_hours) {
            bail!("the idempotency key lifetime must be between 1 and 720 hours");
        }
        let replication_token = args.replication_token.clone();
        if replication_token
            .as_ref()
            .is_some_and(|t| t.len() < 32 || t.len() > 512 || t.chars().any(char::is_whitespace))
        {
            bail!("the replication token must be 32 to 512 characters without spaces");
        }
        let allow_hosts =
            args.webhook_allow_hosts.clone().or_else(|| file.webhook_allow_hosts.clone()).unwrap_or_default();
        let allow_hosts: Vec<String> =
            allow_hosts.into_iter().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect();
        let server = ServerConfig {
            webhook_urls: keyward_server::webhooks::UrlPolicy { allow_hosts },
            webhook_delivery,
            leak_public_keys: args.leak_public_keys.clone().or_else(|| file.leak_public_keys.clone()),
            idempotency_ttl: Duration::from_secs(u64::from(idempotency_hours) * 3600),
            replication_token,
            retention_days,
            rotation_days,
            cache_max_age: max_age_ms.map(Duration::from_millis).unwrap_or(defaults.cache_max_age),
            listen: args.listen.or(file.listen).unwrap_or(defaults.listen),
            usage_flush_interval: Duration::from_millis(flush_ms),
            cache_capacity: args.cache_capacity.or(file.cache_capacity).unwrap_or(defaults.cache_capacity),
            negative_cache_ttl: args
                .negative_cache_ttl_ms
                .or(file.negative_cache_ttl_ms)
                .map(Duration::from_millis)
                .unwrap_or(defaults.negative_cache_ttl),
            max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(defaults.max_body_bytes),
            forward_auth: forward_auth(args, file)?,
            forward_auth_listen: args.forward_auth_listen.or(file.forward_auth_listen),
            grpc_listen: args.grpc_listen.or(file.grpc_listen),
            clock: defaults.clock.clone(),
            ip_failure_limit: args.ip_failure_limit.or(file.ip_failure_limit).unwrap_or(defaults.ip_failure_limit),
            redis_url: args.redis_url.clone().or_else(|| file.redis_url.clone()),
            public_url: public_url(args.public_url.clone().or_else(|| file.public_url.clone()))?,
            master_keys: None,
            ftp_host: args.ftp_host.clone().or_else(|| file.ftp_host.clone()),
            oauth: oauth_config(&args.signing, args.access_token_lifetime, args.refresh_token_lifetime_days, file)?,
        };
        let storage = Storage::resolve(&args.storage, file)?;
        let server = ServerConfig { master_keys: storage.master_keys.clone(), ..server };
        let log_format = match args.log_format.or(file.log_format) {
            Some(LogFormatArg::Json) => LogFormat::Json,
            _ => LogFormat::Pretty,
        };
        Ok(ServeSettings {
            server,
            storage,
            log_format,
            log_filter: args.log_level.clone().or_else(|| file.log_level.clone()).unwrap_or_else(|| "info".into()),
        })
    }
}

/// How tokens are issued: the flags, else the file, else the defaults.
pub fn oauth_config(
    args: &crate::cli::SigningArgs,
    access_token_lifetime: Option<u32>,
    refresh_token_lifetime_days: Option<u32>,
    file: &FileConfig,
) -> anyhow::Result<keyward_server::oauth::OAuthConfig> {
    use keyward_core::oauth::SigningAlgorithm;
    let defaults = keyward_server::oauth::OAuthConfig::default();
    let access = access_token_lifetime.or(file.access_token_lifetime);
    if access.is_some_and(|s| !(60..=86_400).contains(&s)) {
        bail!("the access token lifetime must be between 60 and 86400 seconds");
    }
    let refresh = refresh_token_lifetime_days.or(file.refresh_token_lifetime_days);
    if refresh.is_some_and(|d| d > 365) {
        bail!("the refresh token lifetime must be at most 365 days (0: no refresh tokens for clients)");
    }
    let rotation = args.signing_key_rotation_days.or(file.signing_key_rotation_days);
    if rotation.is_some_and(|d| !(1..=365).contains(&d)) {
        bail!("the signing key rotation must be between 1 and 365 days");
    }
    let access_token_lifetime = access.map_or(defaults.access_token_lifetime, |s| chrono::Duration::seconds(s.into()));
    Ok(keyward_server::oauth::OAuthConfig {
        access_token_lifetime,
        refresh_token_lifetime: match refresh {
            Some(0) => None,
            Some(d) => Some(chrono::Duration::days(d.into())),
            None => defaults.refresh_token_lifetime,
        },
        exchange_lifetime: defaults.exchange_lifetime.min(access_token_lifetime),
        algorithm: match args.token_algorithm.or(file.token_algorithm) {
            Some(crate::cli::TokenAlgorithmArg::Es256) => SigningAlgorithm::Es256,
            _ => SigningAlgorithm::EdDsa,
        },
        signing_key_rotation: rotation.map_or(defaults.signing_key_rotation, |d| chrono::Duration::days(d.into())),
        max_refresh_families: defaults.max_refresh_families,
    })
}

/// A public URL must be absolute http(s).
fn public_url(url: Option<String>) -> anyhow::Result<Option<String>> {
    match url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "https://".len() => {
            bail!("the public URL must be an http:// or https:// URL, such as https://keys.example.com")
        }
        other => Ok(other),
    }
}
