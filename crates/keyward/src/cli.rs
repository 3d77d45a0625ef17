//! Command-line interface: raw flags (first stage). `settings` turns them
//! into validated settings (second stage).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// keyward: self-hosted API key management and verification.
///
/// Server and operator commands (serve, bootstrap, workspace create|list|
/// admin-key, migrate, backup, restore) take their options from flags, the
/// environment (shown with each option) and a TOML file (--config), in that
/// order. Client commands (keys …, workspace get|set) talk to a running
/// server: --url and --key (or KEYWARD_URL and KEYWARD_API_KEY).
///
/// Exit status: 0 done, 1 refused (by the server or the database), 2 usage.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (API, docs, metrics). On an empty database it
    /// first creates a workspace and prints its admin key, once.
    Serve(Box<ServeArgs>),
    /// Create the first workspace, its admin key and its owner on an empty
    /// database, print them, and exit. Refuses (exit 1) when already bootstrapped.
    Bootstrap(BootstrapArgs),
    /// Operator commands on workspaces (run against the database directly).
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage keys through a running keyward server.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage identities (customers whose keys share rate limits) through a
    /// running keyward server.
    #[command(subcommand)]
    Identities(IdentitiesCommand),
    /// PGP keys for file encryption, and encrypting or decrypting files
    /// with them, through a running keyward server.
    #[command(subcommand)]
    Pgp(PgpCommand),
    /// The workspace's JavaScript API key, default REST API key and FTP
    /// access, through a running keyward server.
    #[command(subcommand)]
    Integrations(IntegrationsCommand),
    /// External authentication for pure-ftpd (`pure-authd -r`): reads
    /// AUTHD_ACCOUNT, AUTHD_PASSWORD and AUTHD_REMOTE_IP, asks keyward
    /// (`POST /v1/ftp/authenticate`) and prints `auth_ok:1` with `uid:`,
    /// `gid:`, `dir:` and `end`; `auth_ok:0` when refused, `auth_ok:-1`
    /// when keyward cannot answer. Always exits 0.
    FtpAuth(FtpAuthArgs),
    /// The master key that seals recoverable keys' secrets.
    #[command(subcommand)]
    MasterKey(MasterKeyCommand),
    /// Operator commands on members (run against the database directly).
    #[command(subcommand)]
    Member(MemberCommand),
    /// The keys OAuth access tokens are signed with (run against the
    /// database directly, with the master key).
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Check the audit log's integrity and sign checkpoints of it (run
    /// against the database directly, with the hash key).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Apply the database's pending migrations and exit (`serve` also does
    /// so at start; several nodes starting at once apply them once).
    Migrate {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Write a consistent copy of the SQLite database to FILE, while keyward
    /// runs (for PostgreSQL it names the pg_dump to run). Keep the hash key
    /// with it: without it no key in the copy verifies.
    Backup {
        /// A new file for the copy.
        file: PathBuf,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Replace the SQLite database with a backup made by `keyward backup`.
    /// Stop keyward first. Refuses a backup made with another hash key.
    Restore {
        /// The backup file.
        file: PathBuf,
        #[command(flatten)]
        storage: StorageArgs,
        /// Replace a database that holds data.
        #[arg(long)]
        force: bool,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi,
    /// Print a shell completion script: `keyward completions bash >
    /// /etc/bash_completion.d/keyward` (zsh and fish alike).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where the data lives and the key that hashes secrets.
#[derive(Debug, Args, Clone, Default)]
pub struct StorageArgs {
    /// TOML configuration file (keys: listen, database_url,
    /// database_pool_size, data_dir, hash_key_file, master_key_file, log_format, log_level,
    /// usage_flush_interval_ms, cache_capacity, negative_cache_ttl_ms,
    /// cache_max_age_ms, ip_failure_limit, retention_days, rotation_days, redis_url, max_body_bytes, forward_auth_listen, grpc_listen,
    /// forward_auth_key_header, forward_auth_key_query, trusted_proxies, public_url, ftp_host,
    /// webhook_allow_hosts, webhook_concurrency, webhook_timeout_seconds, webhook_retention_days, leak_public_keys, idempotency_hours,
    /// access_token_lifetime, refresh_token_lifetime_days, token_algorithm, signing_key_rotation_days).
    #[arg(long, env = "KEYWARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://USER:PASSWORD@HOST/DB
    /// (also postgresql://). Default: sqlite://<data dir>/keyward.db
    #[arg(long, env = "KEYWARD_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Database connections per node (PostgreSQL; SQLite's readers). Default: 10
    #[arg(long, env = "KEYWARD_DATABASE_POOL_SIZE", value_name = "N")]
    pub database_pool_size: Option<u32>,
    /// Directory for the SQLite database and the generated hash key.
    /// Default: ./keyward-data
    #[arg(long, env = "KEYWARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// File holding the hash key (at least 64 hex characters). Default:
    /// <data dir>/hash.key, generated with mode 0600 on first start. Keep it
    /// safe and outside the database: without it no stored key verifies.
    #[arg(long, env = "KEYWARD_HASH_KEY_FILE", value_name = "FILE")]
    pub hash_key_file: Option<PathBuf>,
    /// The hash key itself, as hex (takes precedence over the file).
    #[arg(long, env = "KEYWARD_HASH_KEY", value_name = "HEX", hide_env_values = true)]
    pub hash_key: Option<String>,
    /// File holding the master key that seals recoverable keys' secrets
    /// (64 hex characters). While rotating: several lines, the new key
    /// first. Without one, keys cannot be recoverable.
    #[arg(long, env = "KEYWARD_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, as hex (several: comma-separated, newest
    /// first); takes precedence over the file.
    #[arg(long, env = "KEYWARD_MASTER_KEY", value_name = "HEX", hide_env_values = true)]
    pub master_key: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatArg {
    Pretty,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Default: 127.0.0.1:8080
    #[arg(long, env = "KEYWARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Log format. Default: pretty
    #[arg(long, env = "KEYWARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Log filter, e.g. `info` or `keyward_server=debug`. Default: info
    #[arg(long, env = "KEYWARD_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Milliseconds between usage-count flushes. Default: 1000
    #[arg(long, env = "KEYWARD_USAGE_FLUSH_INTERVAL_MS", value_name = "MS")]
    pub usage_flush_interval_ms: Option<u64>,
    /// Keys kept in memory for verification. Default: 100000
    #[arg(long, env = "KEYWARD_CACHE_CAPACITY", value_name = "N")]
    pub cache_capacity: Option<usize>,
    /// Milliseconds an unknown key id is remembered as unknown. Default: 5000
    #[arg(long, env = "KEYWARD_NEGATIVE_CACHE_TTL_MS", value_name = "MS")]
    pub negative_cache_ttl_ms: Option<u64>,
    /// Milliseconds a cached key record is trusted before it is read again;
    /// bounds staleness on a cluster if change notices are lost. Default: 60000
    #[arg(long, env = "KEYWARD_CACHE_MAX_AGE_MS", value_name = "MS")]
    pub cache_max_age_ms: Option<u64>,
    /// Failed authentications from one client address per minute before
    /// that address is refused (429) for the rest of the minute; 0: no limit.
    /// Default: 50
    #[arg(long, env = "KEYWARD_IP_FAILURE_LIMIT", value_name = "N")]
    pub ip_failure_limit: Option<u32>,
    /// Days of per-key usage history kept (hourly rollups; older ones are
    /// pruned), and the longest period a query may ask for (1–400).
    /// Default: 90
    #[arg(long, env = "KEYWARD_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u32>,
    /// Keys older than this many days are reported as due for rotation
    /// (`keyward keys hygiene`). Default: 90
    #[arg(long, env = "KEYWARD_ROTATION_DAYS", value_name = "DAYS")]
    pub rotation_days: Option<u32>,
    /// Redis shared by every node (redis://host:6379): rate limits become
    /// exact across nodes. Without it each node limits on its own.
    #[arg(long, env = "KEYWARD_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Largest accepted request body, in bytes. Default: 65536
    #[arg(long, env = "KEYWARD_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Also serve forward-auth (`/v1/authorize`) on this address, to
    /// gateways that cannot send X-Keyward-Verifier-Key (e.g. Traefik).
    /// Callers of this listener are trusted: bind it to a private address.
    #[arg(long, env = "KEYWARD_FORWARD_AUTH_LISTEN", value_name = "ADDR")]
    pub forward_auth_listen: Option<SocketAddr>,
    /// Serve Envoy's ext_authz over gRPC (envoy.service.auth.v3.Authorization/Check)
    /// on this address: the same decisions as forward-auth's listener, whose
    /// callers are trusted too: bind it to a private address.
    #[arg(long, env = "KEYWARD_GRPC_LISTEN", value_name = "ADDR")]
    pub grpc_listen: Option<SocketAddr>,
    /// Header that may carry the client's key in forward-auth, besides
    /// `Authorization: Bearer`; `none` to disable. Default: X-API-Key
    #[arg(long, env = "KEYWARD_FORWARD_AUTH_KEY_HEADER", value_name = "HEADER")]
    pub forward_auth_key_header: Option<String>,
    /// Query parameter of the original URI that may carry the client's key
    /// in forward-auth. Default: none (keys in URLs end up in logs)
    #[arg(long, env = "KEYWARD_FORWARD_AUTH_KEY_QUERY", value_name = "PARAM")]
    pub forward_auth_key_query: Option<String>,
    /// Comma-separated addresses/CIDRs of proxies whose X-Forwarded-For is
    /// believed. Default: 127.0.0.0/8,::1/128
    #[arg(long, env = "KEYWARD_TRUSTED_PROXIES", value_name = "CIDRS", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// The URL people reach this server at, when behind a proxy (e.g.
    /// https://keys.example.com): signed-in pages there may change things.
    /// Also the OAuth issuer (else the URL a request names).
    #[arg(long, env = "KEYWARD_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The host name of the FTP server that asks keyward (`keyward
    /// ftp-auth`), shown beside each workspace's FTP username.
    #[arg(long, env = "KEYWARD_FTP_HOST", value_name = "HOST")]
    pub ftp_host: Option<String>,
    /// Comma-separated hosts webhooks may reach over plain HTTP and at
    /// loopback, private or link-local addresses (e.g. 127.0.0.1,hooks.internal).
    #[arg(long, env = "KEYWARD_WEBHOOK_ALLOW_HOSTS", value_name = "HOSTS", value_delimiter = ',')]
    pub webhook_allow_hosts: Option<Vec<String>>,
    /// Webhook deliveries this node sends at once (0: it sends none and
    /// leaves the outbox to other nodes). Default: 16
    #[arg(long, env = "KEYWARD_WEBHOOK_CONCURRENCY", value_name = "N")]
    pub webhook_concurrency: Option<usize>,
    /// Seconds one webhook attempt may take (1–60). Default: 10
    #[arg(long, env = "KEYWARD_WEBHOOK_TIMEOUT_SECONDS", value_name = "SECONDS")]
    pub webhook_timeout_seconds: Option<u64>,
    /// Days delivered and failed webhook deliveries are kept (1–400). Default: 30
    #[arg(long, env = "KEYWARD_WEBHOOK_RETENTION_DAYS", value_name = "DAYS")]
    pub webhook_retention_days: Option<u32>,
    /// Hours an Idempotency-Key and the answer it got are kept for retries
    /// (1–720). Default: 24
    #[arg(long, env = "KEYWARD_IDEMPOTENCY_HOURS", value_name = "HOURS")]
    pub idempotency_hours: Option<u32>,
    /// A node-wide replication token (at least 32 characters): embedded
    /// verifiers holding it stream every workspace's verification records
    /// (GET /v1/replication/stream). Prefer the environment variable.
    #[arg(long, env = "KEYWARD_REPLICATION_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub replication_token: Option<String>,
    /// The public keys code hosts sign leak alerts with: a JSON file shaped
    /// as GitHub's secret-scanning keys document ({"public_keys":
    /// [{"key_identifier", "key", "is_current"}]}), read again when it changes.
    #[arg(long, env = "KEYWARD_LEAK_PUBLIC_KEYS", value_name = "FILE")]
    pub leak_public_keys: Option<PathBuf>,
    /// Seconds an OAuth access token lives (60–86400). Default: 3600
    #[arg(long, env = "KEYWARD_ACCESS_TOKEN_LIFETIME", value_name = "SECONDS")]
    pub access_token_lifetime: Option<u32>,
    /// Days a client's refresh-token grant lives (0: clients get no refresh
    /// tokens; at most 365). Default: 30
    #[arg(long, env = "KEYWARD_REFRESH_TOKEN_LIFETIME_DAYS", value_name = "DAYS")]
    pub refresh_token_lifetime_days: Option<u32>,
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Name of the workspace created on an empty database. Default: Default
    #[arg(long, value_name = "NAME", default_value = "Default")]
    pub workspace_name: String,
    #[command(flatten)]
    pub owner: OwnerArgs,
}

/// How access tokens are signed (the servers and `keyward signing-key
/// rotate` should agree).
#[derive(Debug, Clone, Args, Default)]
pub struct SigningArgs {
    /// Access tokens' signature algorithm. Default: EdDSA
    #[arg(long, env = "KEYWARD_TOKEN_ALGORITHM", value_enum)]
    pub token_algorithm: Option<TokenAlgorithmArg>,
    /// Days a signing key signs before a new one replaces it (1–365); the
    /// old one stays published until its tokens expire. Default: 90
    #[arg(long, env = "KEYWARD_SIGNING_KEY_ROTATION_DAYS", value_name = "DAYS")]
    pub signing_key_rotation_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum, serde::Deserialize)]
pub enum TokenAlgorithmArg {
    #[value(name = "EdDSA")]
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[value(name = "ES256")]
    #[serde(rename = "ES256")]
    Es256,
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Make a new signing key the one that signs access tokens; the old one
    /// stays in the JWKS until every token it signed has expired. Needs the
    /// master key. Servers on PostgreSQL pick it up at once, others within
    /// a minute.
    Rotate {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// List the published signing keys (kid, algorithm, created, retired).
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

/// The owner created with the first workspace.
#[derive(Debug, Clone, Args)]
pub struct OwnerArgs {
    /// Email of the owner created with the first workspace.
    #[arg(long, env = "KEYWARD_OWNER_EMAIL", value_name = "EMAIL", default_value = "owner@localhost")]
    pub owner_email: String,
    /// That owner's password (at least 10 characters). Default: generated
    /// and printed once.
    #[arg(long, env = "KEYWARD_OWNER_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub owner_password: Option<String>,
}

impl OwnerArgs {
    pub fn spec(&self) -> keyward_server::workspaces::OwnerSpec {
        keyward_server::workspaces::OwnerSpec { email: self.owner_email.clone(), password: self.owner_password.clone() }
    }
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Name of the first workspace.
    #[arg(long, value_name = "NAME", default_value = "Default")]
    pub name: String,
    /// Print {"workspaceId", "adminKey", "ownerEmail", "ownerPassword"
    /// (when generated)} as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub owner: OwnerArgs,
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Invite a person to a workspace, as the operator (keys never invite
    /// people: a workspace made with `workspace create` gets its first
    /// member this way). Prints the one-time invitation token.
    Invite {
        /// The person's email.
        email: String,
        /// The workspace's id.
        #[arg(long = "workspace", value_name = "ID")]
        workspace_id: String,
        /// Their name (default: the part of the email before the @).
        #[arg(long)]
        name: Option<String>,
        /// A role to give (repeatable): owner, admin, developer, viewer or
        /// the workspace's own.
        #[arg(long = "role", value_name = "ROLE", default_value = "owner")]
        roles: Vec<String>,
        /// Print {"invitationId", "token", "expiresAt"} as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Set a member's password (a locked-out owner); every session of
    /// theirs ends. Without --password one is generated and printed once.
    SetPassword {
        /// The member's email.
        email: String,
        /// The new password (at least 10 characters, not the email).
        #[arg(long, env = "KEYWARD_MEMBER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print a signed checkpoint of a workspace's audit chain (sequence,
    /// head hash, Ed25519 signature) as JSON, to keep somewhere else.
    Checkpoint {
        /// The workspace's id.
        #[arg(long = "workspace", value_name = "ID")]
        workspace_id: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Walk the audit chains (every workspace's, or one); exit 1 naming
    /// the first bad entry: edited, removed or inserted, or, against a
    /// checkpoint, entries removed from the end.
    Verify {
        /// Only this workspace.
        #[arg(long = "workspace", value_name = "ID")]
        workspace_id: Option<String>,
        /// A file written by `keyward audit checkpoint` (implies its workspace).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Print a new random master key (64 hex characters) to put in a file.
    Generate,
    /// Re-wrap every recoverable secret under the current master key (the
    /// first given), while keyward serves. Give the new key first and the
    /// old after it (a key file of two lines, or KEYWARD_MASTER_KEY=NEW,OLD)
    /// here and to the servers; once done, the old key can be dropped.
    Rotate {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace with its own admin key, printed once.
    Create {
        /// The workspace's name.
        name: String,
        #[command(flatten)]
        storage: StorageArgs,
        /// Print {"workspaceId": ..., "adminKey": ...} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the workspaces of the database, with their live keys.
    List {
        #[command(flatten)]
        storage: StorageArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the caller's workspace and its key policy (through the server).
    Get {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change the caller's workspace: name and key policy (through the server).
    Set {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        name: Option<String>,
        /// Most live keys the workspace may hold, or `none`.
        #[arg(long, value_name = "N|none")]
        max_keys: Option<String>,
        /// Lifetime of keys created without an expiry, in days, or `none`.
        #[arg(long, value_name = "DAYS|none")]
        default_key_lifetime_days: Option<String>,
        /// Longest lifetime a key may have, in days, or `none`.
        #[arg(long, value_name = "DAYS|none")]
        max_key_lifetime_days: Option<String>,
        /// Every key must expire: true or false.
        #[arg(long, value_name = "BOOL")]
        require_expiry: Option<bool>,
    },
    /// Give every live key that breaks the expiry policy the policy's date
    /// (through the server).
    ApplyExpiryPolicy {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Mint a new admin key for a workspace (when its admin key is lost);
    /// printed once. Other keys are untouched.
    AdminKey {
        /// The workspace's id (see `keyward workspace list`).
        workspace_id: String,
        #[command(flatten)]
        storage: StorageArgs,
        /// Print {"workspaceId": ..., "adminKey": ...} as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How the `keys` commands reach the server.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the keyward server.
    #[arg(long, env = "KEYWARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key with keys:manage (for reads, keys:read).
    #[arg(long, env = "KEYWARD_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each answer. A creating or changing command
    /// sends an Idempotency-Key and, when the server does not answer in
    /// time, asks again with the same key (3 tries): the change is made
    /// once, and the answer (a new key's secret too) arrives.
    #[arg(long, env = "KEYWARD_TIMEOUT", value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// The settings of a key, for `keys create` and `keys edit`.
#[derive(Debug, Args, Default)]
pub struct KeySettings {
    /// Name, unique among the workspace's live keys.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// A scope: read, write, admin, resource:action or * (repeatable; on
    /// edit, replaces the scopes).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Limit the key to a resource (site) id (repeatable).
    #[arg(long = "resource", value_name = "ID")]
    pub resources: Vec<String>,
    /// Browser origin allowed to use the key (repeatable).
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// Client address or CIDR allowed to use the key (repeatable).
    #[arg(long = "allowed-ip", value_name = "CIDR")]
    pub allowed_ips: Vec<String>,
    /// Expire at this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
    /// GET/HEAD only, on everything: true or false.
    #[arg(long, value_name = "BOOL")]
    pub read_only: Option<bool>,
    /// Metadata: a JSON object.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Named rate limits, a JSON array such as
    /// '[{"name":"requests","limit":100,"durationMs":60000,"autoApply":true}]'
    /// (on edit, replaces them; '[]' removes them).
    #[arg(long, value_name = "JSON")]
    pub ratelimits: Option<String>,
    /// The identity (your customer id) the key belongs to; created when new.
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
}

/// What an identity carries besides its external id.
#[derive(Debug, Args)]
pub struct IdentitySettings {
    /// A JSON object.
    #[arg(long, value_name = "JSON")]
    pub meta: Option<String>,
    /// Limits shared by all its keys, a JSON array (see `keys create --help`).
    #[arg(long, value_name = "JSON")]
    pub ratelimits: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum IdentitiesCommand {
    /// Create an identity.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Your id for this customer (1–256 characters), unique in the workspace.
        #[arg(long, value_name = "ID")]
        external_id: String,
        #[command(flatten)]
        settings: IdentitySettings,
    },
    /// List identities, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one identity.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Change an identity's meta or limits.
    Edit {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        #[command(flatten)]
        settings: IdentitySettings,
    },
    /// Delete an identity no live key belongs to.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCommand {
    /// Show the JavaScript API key, the default REST API key and the FTP
    /// username (needs integrations:read).
    Show {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Give FTP access a new generated password and print it, once (needs
    /// integrations:manage). The old password stops working at once.
    FtpRotate {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What `keyward ftp-auth` answers pure-ftpd with.
#[derive(Debug, Args)]
pub struct FtpAuthArgs {
    /// Base URL of the keyward server.
    #[arg(long, env = "KEYWARD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The FTP server's own API key, holding ftp:authenticate.
    #[arg(long, env = "KEYWARD_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Directory holding each site's home (`dir:` is ROOT/<site id>).
    #[arg(long, env = "KEYWARD_FTP_ROOT", value_name = "DIR", default_value = "/srv/ftp")]
    pub root: PathBuf,
    /// The system user id FTP sessions run as.
    #[arg(long, env = "KEYWARD_FTP_UID", default_value_t = 65534)]
    pub uid: u32,
    /// The system group id FTP sessions run as.
    #[arg(long, env = "KEYWARD_FTP_GID", default_value_t = 65534)]
    pub gid: u32,
    /// Milliseconds to wait for keyward before answering `auth_ok:-1`.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum PgpCommand {
    /// Upload one OpenPGP key (armored, or GnuPG's binary export) and print it.
    Upload {
        #[command(flatten)]
        client: ClientArgs,
        /// Unique in the workspace.
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// The key file (`gpg --armor --export`, or `--export-secret-keys`
        /// with --private); `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// The file holds a private key: it is stored sealed and lets
        /// keyward decrypt.
        #[arg(long)]
        private: bool,
        /// File whose first line is the private key's passphrase (never on
        /// the command line; also KEYWARD_PGP_PASSPHRASE).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// List the workspace's PGP keys, by name.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one PGP key.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Print a key's public part, armored (`| gpg --import`).
    Public {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Rename a key or change its description.
    Edit {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// An empty description clears it.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a key (and its sealed private part).
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Encrypt a file to a key, streamed: standard input to standard output
    /// unless --in / --out name files.
    Encrypt {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        /// ASCII-armored output instead of binary.
        #[arg(long)]
        armor: bool,
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Decrypt an OpenPGP message with a key's stored private part, streamed.
    Decrypt {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown once).
    Create {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        settings: KeySettings,
        /// Expire after this many days.
        #[arg(long, value_name = "DAYS")]
        expires_in: Option<i64>,
        /// live or test.
        #[arg(long)]
        environment: Option<String>,
        /// secret (default) or publishable.
        #[arg(long = "type", value_name = "TYPE")]
        key_type: Option<String>,
    },
    /// List keys, newest first.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only keys in this state: active, inactive or revoked.
        #[arg(long)]
        state: Option<String>,
        /// Only keys whose name contains this.
        #[arg(long)]
        name: Option<String>,
        /// Only keys of this type: secret, publishable or client.
        #[arg(long = "type", value_name = "TYPE")]
        key_type: Option<String>,
    },
    /// Show one key.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Change a key's settings (only those given).
    Edit {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        #[command(flatten)]
        settings: KeySettings,
        /// Remove the expiry.
        #[arg(long, conflicts_with = "expires_at")]
        no_expiry: bool,
        /// Only if the key is still at this version (its ETag).
        #[arg(long, value_name = "VERSION")]
        if_match: Option<i64>,
    },
    /// A new key with the same settings, and its secret (shown once).
    Clone {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        /// The clone's name. Default: NAME (clone)
        #[arg(long)]
        name: Option<String>,
    },
    /// A new secret for the key (shown once); the old one stops at once or
    /// after the grace period.
    Roll {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        /// Seconds the old secret keeps working (at most 30 days).
        #[arg(long, value_name = "SECONDS")]
        grace_seconds: Option<u32>,
    },
    /// Switch a key off (reversible).
    Deactivate {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Switch an inactive key back on.
    Activate {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Revoke a key at once and for good.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Delete an inactive or revoked key.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Import a key from another system, as its plaintext (read from
    /// standard input with `-`) or its SHA-256.
    Import {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        settings: KeySettings,
        /// The key itself; `-` reads it from standard input (keeps it out of
        /// the shell history).
        #[arg(long, value_name = "KEY|-", required_unless_present = "sha256")]
        plaintext: Option<String>,
        /// The SHA-256 of the key, as hex.
        #[arg(long, value_name = "HEX", conflicts_with = "plaintext")]
        sha256: Option<String>,
        /// The prefix the system's keys share (e.g. zta_live_).
        #[arg(long)]
        prefix: Option<String>,
        /// The id the key had.
        #[arg(long)]
        id: Option<String>,
        /// Verifies, but cannot be edited or deleted.
        #[arg(long)]
        legacy: bool,
    },
    /// A key's verifications per day (or hour) by outcome.
    Usage {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        /// Back from now, such as 30d (default) or 24h.
        #[arg(long)]
        period: Option<String>,
        /// day (default) or hour.
        #[arg(long)]
        granularity: Option<String>,
    },
    /// The hygiene report: keys never or long unused, due for rotation,
    /// privileged, without expiry, expiring soon, locked, or used at
    /// unusual hours, each with the recommended action.
    Hygiene {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask whether a key is good for a request. Exit status 0 when valid,
    /// 1 when not.
    Verify {
        #[command(flatten)]
        client: ClientArgs,
        /// The key to check; `-` reads it from standard input.
        token: String,
        /// Permission needed, as resource:action.
        #[arg(long)]
        permission: Option<String>,
        /// Resource (site) id the request touches.
        #[arg(long)]
        resource: Option<String>,
        #[arg(long)]
        method: Option<String>,
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        origin: Option<String>,
        #[arg(long)]
        ip: Option<String>,
    },
}
