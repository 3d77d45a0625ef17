//! Every error code the API and the console answer with: one enum, so no
//! code is a string compared or typed twice. `as_str` is the wire form.

macro_rules! codes {
    ($($variant:ident = $text:literal,)*) => {
        /// A stable machine-readable error code (`{"code": "..."}`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, for the OpenAPI document.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as clients read it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    AlreadyMember = "already_member",
    ApiKeyExpired = "api_key_expired",
    AuthenticationRequired = "authentication_required",
    BodyRequired = "body_required",
    BuiltinRole = "builtin_role",
    CannotGrant = "cannot_grant",
    ConcurrentModification = "concurrent_modification",
    Conflict = "conflict",
    CrossOriginRequest = "cross_origin_request",
    DeliveryNotFound = "delivery_not_found",
    DescriptionTooLong = "description_too_long",
    DuplicateEmail = "duplicate_email",
    DuplicateExternalId = "duplicate_external_id",
    DuplicateId = "duplicate_id",
    DuplicateKey = "duplicate_key",
    DuplicateName = "duplicate_name",
    DuplicateRole = "duplicate_role",
    DuplicateSiteId = "duplicate_site_id",
    ExpiryExtension = "expiry_extension",
    ExpiryRequired = "expiry_required",
    ExpiryTooLate = "expiry_too_late",
    ForbiddenIp = "forbidden_ip",
    ForbiddenOrigin = "forbidden_origin",
    ForbiddenResource = "forbidden_resource",
    HashKeyTooShort = "hash_key_too_short",
    IdRequired = "id_required",
    IdempotencyKeyInProgress = "idempotency_key_in_progress",
    IdempotencyKeyReused = "idempotency_key_reused",
    IdempotentAnswerLost = "idempotent_answer_lost",
    IdentityInUse = "identity_in_use",
    IdentityNotFound = "identity_not_found",
    ImportSourceRequired = "import_source_required",
    ImportedKey = "imported_key",
    InsufficientPermissions = "insufficient_permissions",
    InternalError = "internal_error",
    InvalidAfter = "invalid_after",
    InvalidApiKey = "invalid_api_key",
    InvalidBatch = "invalid_batch",
    InvalidBody = "invalid_body",
    InvalidCatalogue = "invalid_catalogue",
    InvalidCheckpoint = "invalid_checkpoint",
    InvalidClient = "invalid_client",
    InvalidContents = "invalid_contents",
    InvalidCredentials = "invalid_credentials",
    InvalidCredits = "invalid_credits",
    InvalidCursor = "invalid_cursor",
    InvalidDescription = "invalid_description",
    InvalidEmail = "invalid_email",
    InvalidEnvironment = "invalid_environment",
    InvalidEvents = "invalid_events",
    InvalidExpiry = "invalid_expiry",
    InvalidExternalId = "invalid_external_id",
    InvalidGracePeriod = "invalid_grace_period",
    InvalidGrant = "invalid_grant",
    InvalidId = "invalid_id",
    InvalidIdempotencyKey = "invalid_idempotency_key",
    InvalidIdentityMetadata = "invalid_identity_metadata",
    InvalidIfMatch = "invalid_if_match",
    InvalidImportKey = "invalid_import_key",
    InvalidIp = "invalid_ip",
    InvalidIpRange = "invalid_ip_range",
    InvalidLeakPolicy = "invalid_leak_policy",
    InvalidLeakSignature = "invalid_leak_signature",
    InvalidLimit = "invalid_limit",
    InvalidLockout = "invalid_lockout",
    InvalidMasterKey = "invalid_master_key",
    InvalidMaxKeys = "invalid_max_keys",
    InvalidMetadata = "invalid_metadata",
    InvalidMethod = "invalid_method",
    InvalidName = "invalid_name",
    InvalidNotices = "invalid_notices",
    InvalidObjectType = "invalid_object_type",
    InvalidOp = "invalid_op",
    InvalidOrigin = "invalid_origin",
    InvalidOriginalMethod = "invalid_original_method",
    InvalidOriginalUri = "invalid_original_uri",
    InvalidParameter = "invalid_parameter",
    InvalidPassphrase = "invalid_passphrase",
    InvalidPassword = "invalid_password",
    InvalidPath = "invalid_path",
    InvalidPermission = "invalid_permission",
    InvalidPermissions = "invalid_permissions",
    InvalidPolicy = "invalid_policy",
    InvalidPrefix = "invalid_prefix",
    InvalidQuery = "invalid_query",
    InvalidRatelimits = "invalid_ratelimits",
    InvalidRequest = "invalid_request",
    InvalidResource = "invalid_resource",
    InvalidResources = "invalid_resources",
    InvalidRoles = "invalid_roles",
    InvalidRoute = "invalid_route",
    InvalidScope = "invalid_scope",
    InvalidSiteId = "invalid_site_id",
    InvalidSha256 = "invalid_sha256",
    InvalidState = "invalid_state",
    InvalidTags = "invalid_tags",
    InvalidTokenPrefix = "invalid_token_prefix",
    InvalidType = "invalid_type",
    InvalidUsername = "invalid_username",
    InvalidWorkspaceName = "invalid_workspace_name",
    InvitationExpired = "invitation_expired",
    InvitationNotFound = "invitation_not_found",
    InvitationUsed = "invitation_used",
    KeyActive = "key_active",
    KeyChanged = "key_changed",
    KeyExpired = "key_expired",
    KeyLimitReached = "key_limit_reached",
    KeyNotFound = "key_not_found",
    KeyRevoked = "key_revoked",
    LastOwner = "last_owner",
    LegacyKey = "legacy_key",
    MalformedJson = "malformed_json",
    MasterKeyRequired = "master_key_required",
    MemberNotFound = "member_not_found",
    MemberRequired = "member_required",
    MemberSessionRequired = "member_session_required",
    MetadataTooLarge = "metadata_too_large",
    MethodNotAllowed = "method_not_allowed",
    MissingOriginalUri = "missing_original_uri",
    NameIsPersonal = "name_is_personal",
    NameRequired = "name_required",
    NameTooLong = "name_too_long",
    NoCredits = "no_credits",
    NoEncryptionKey = "no_encryption_key",
    NoExpiryPolicy = "no_expiry_policy",
    NoPrivateKey = "no_private_key",
    NoWorkspace = "no_workspace",
    NotEncrypted = "not_encrypted",
    NotFound = "not_found",
    OtherWorkspace = "other_workspace",
    NotOpenpgp = "not_openpgp",
    NotPublic = "not_public",
    NotReady = "not_ready",
    NotRecoverable = "not_recoverable",
    OperatorRequired = "operator_required",
    OriginsRequired = "origins_required",
    OwnerRequired = "owner_required",
    PassphraseRequired = "passphrase_required",
    PassphraseTooCostly = "passphrase_too_costly",
    PayloadTooLarge = "payload_too_large",
    PgpKeyNotFound = "pgp_key_not_found",
    PreconditionFailed = "precondition_failed",
    PrefixRequired = "prefix_required",
    PrivateMismatch = "private_mismatch",
    RateLimited = "rate_limited",
    ReauthenticationRequired = "reauthentication_required",
    RecoverableNeedsPlaintext = "recoverable_needs_plaintext",
    RecoverableNotAllowed = "recoverable_not_allowed",
    RestKeyExists = "rest_key_exists",
    RoleInUse = "role_in_use",
    RoleNotFound = "role_not_found",
    ServerError = "server_error",
    SessionExpired = "session_expired",
    SeveralKeys = "several_keys",
    StorageUnavailable = "storage_unavailable",
    TaggedAccountPermission = "tagged_account_permission",
    TemporarilyUnavailable = "temporarily_unavailable",
    TokenExpired = "token_expired",
    TokenNotFound = "token_not_found",
    TooManyFailures = "too_many_failures",
    TooManyIpRanges = "too_many_ip_ranges",
    TooManyOrigins = "too_many_origins",
    TooManyResources = "too_many_resources",
    TooManyRoutes = "too_many_routes",
    TooManyScopes = "too_many_scopes",
    TooManySignInAttempts = "too_many_sign_in_attempts",
    TooManySubkeys = "too_many_subkeys",
    UnknownPermission = "unknown_permission",
    UnknownQueryParameter = "unknown_query_parameter",
    UnknownRatelimit = "unknown_ratelimit",
    UnknownRole = "unknown_role",
    UnreadableBody = "unreadable_body",
    UnsupportedGrantType = "unsupported_grant_type",
    UnsupportedMediaType = "unsupported_media_type",
    UsageExceeded = "usage_exceeded",
    VerifierKeyRequired = "verifier_key_required",
    WeakPassword = "weak_password",
    WebhookNotFound = "webhook_not_found",
    WebhookUrlNotAllowed = "webhook_url_not_allowed",
    WorkspaceNotFound = "workspace_not_found",
    WrongKey = "wrong_key",
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(c.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{c}");
        }
    }
}
