//! The store contract, one test body per behaviour, run on SQLite and on
//! PostgreSQL (`sqlite::…` and `postgres::…` variants).

use std::sync::Arc;

use chrono::{Duration, Utc};
use keyward_core::hash::SecretHasher;
use keyward_core::key::{ApiKey, KeyDraft, KeyState};
use keyward_core::token::{self, Environment};
use keyward_core::workspace::Workspace;
use keyward_store::testing::{Backend, TestDb};
use keyward_store::{Change, KeyFilter, Page, Store, StoreError, Unique, UsageDelta, Write};

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(keyward_store::testing::Backend::Sqlite, stringify!($name), super::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(keyward_store::testing::Backend::Postgres, stringify!($name), super::$name).await
                }
            )*
        }
    };
}

conformance!(
    key_limit_holds_under_concurrent_inserts_from_two_nodes,
    stale_versions_are_refused_and_a_change_is_all_or_nothing,
    live_names_ids_and_imported_secrets_are_unique,
    usage_of_deleted_keys_is_dropped_and_counts_add_up,
    pages_are_newest_first_with_cursors_and_filters,
    one_refused_change_does_not_undo_others_committed_with_it,
    bootstrap_marker_is_claimed_once,
    identities_hold_their_keys_limits_and_unique_external_ids,
    audit_chains_stay_whole_under_concurrent_appends_from_two_nodes,
    pgp_keys_keep_their_sealed_part_and_unique_names,
    bulk_inserted_keys_read_back_as_written,
    integrations_are_made_once_found_by_site_id_and_lock,
    webhook_events_fan_out_claims_and_leases_hold_across_nodes,
    idempotency_keys_are_claimed_once_marked_with_the_change_and_expire,
);

/// A fresh database; `url` lets a test open it a second time (another node).
struct Ctx {
    store: Arc<dyn Store>,
    url: String,
}

async fn run<F, Fut>(backend: Backend, name: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(db) = TestDb::new(backend, name).await else { return };
    let store = keyward_store::open(&db.url).await.expect("open a fresh database");
    body(Ctx { store, url: db.url.clone() }).await;
}

fn hasher() -> SecretHasher {
    SecretHasher::new(&[7u8; 32]).unwrap()
}

async fn workspace(store: &dyn Store, max_keys: Option<u32>) -> Workspace {
    let mut ws = Workspace::new("conformance", Utc::now()).unwrap();
    ws.policy.max_keys = max_keys;
    store.commit(Change::of(Write::InsertWorkspace(ws.clone()))).await.unwrap();
    ws
}

fn key(ws: &Workspace, name: &str) -> ApiKey {
    let draft = KeyDraft { name: Some(name.to_owned()), ..Default::default() };
    let valid = draft.validate(ws, Utc::now()).unwrap();
    let secret = token::generate(&ws.token_prefix, Environment::Live);
    let parsed = token::parse(secret.expose()).unwrap();
    valid.into_key(parsed.key_id(), &ws.id, token::mask(secret.expose()), hasher().native(&parsed), Utc::now())
}

fn insert(k: &ApiKey, limit: Option<u32>) -> Change {
    Change::of(Write::InsertKey { key: k.clone(), max_live_keys: limit })
}

async fn key_limit_holds_under_concurrent_inserts_from_two_nodes(ctx: Ctx) {
    let other = keyward_store::open(&ctx.url).await.unwrap();
    let ws = workspace(&*ctx.store, Some(5)).await;
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = if i % 2 == 0 { ctx.store.clone() } else { other.clone() };
            let k = key(&ws, &format!("race {i}"));
            tokio::spawn(async move { store.commit(insert(&k, Some(5))).await })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => created += 1,
            Err(StoreError::LimitReached) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(created, 5, "exactly the limit is created");
    let page = ctx.store.list_keys(&ws.id, &KeyFilter::default(), Page { after: None, limit: 100 }).await.unwrap();
    assert_eq!(page.keys.len(), 5);
}

async fn stale_versions_are_refused_and_a_change_is_all_or_nothing(ctx: Ctx) {
    let ws = workspace(&*ctx.store, None).await;
    let (a, b) = (key(&ws, "a"), key(&ws, "b"));
    ctx.store.commit(insert(&a, None)).await.unwrap();
    ctx.store.commit(insert(&b, None)).await.unwrap();

    let mut renamed = a.clone();
    renamed.name = "a2".into();
    renamed.version += 1;
    let stale = Write::UpdateKey { key: renamed.clone(), expected_version: a.version + 7 };
    assert!(matches!(ctx.store.commit(Change::of(stale)).await, Err(StoreError::VersionMismatch)));
    let delete_stale =
        Write::DeleteKey { workspace_id: ws.id.clone(), id: b.id.to_string(), expected_version: b.version + 1 };
    assert!(matches!(ctx.store.commit(Change::of(delete_stale)).await, Err(StoreError::VersionMismatch)));

    // A good write and a stale one in one change: neither lands.
    let mut change = Change::of(Write::UpdateKey { key: renamed.clone(), expected_version: a.version });
    change.push(Write::DeleteKey { workspace_id: ws.id.clone(), id: b.id.to_string(), expected_version: 99 });
    assert!(matches!(ctx.store.commit(change).await, Err(StoreError::VersionMismatch)));
    assert_eq!(ctx.store.get_key(&ws.id, &a.id).await.unwrap().unwrap().name, "a");
    assert!(ctx.store.get_key(&ws.id, &b.id).await.unwrap().is_some());

    ctx.store.commit(Change::of(Write::UpdateKey { key: renamed, expected_version: a.version })).await.unwrap();
    let stored = ctx.store.find_key(&a.id).await.unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.version), ("a2", a.version + 1));
    // Another workspace cannot reach the key.
    assert!(ctx.store.get_key("ws_other", &a.id).await.unwrap().is_none());
}

async fn live_names_ids_and_imported_secrets_are_unique(ctx: Ctx) {
    let ws = workspace(&*ctx.store, None).await;
    let first = key(&ws, "same");
    ctx.store.commit(insert(&first, None)).await.unwrap();
    let twin = key(&ws, "same");
    assert!(matches!(ctx.store.commit(insert(&twin, None)).await, Err(StoreError::Conflict(Unique::KeyName))));
    let mut same_id = key(&ws, "other");
    same_id.id = first.id.clone();
    assert!(matches!(ctx.store.commit(insert(&same_id, None)).await, Err(StoreError::Conflict(Unique::KeyId))));

    // A revoked key frees its name.
    let mut revoked = first.clone();
    revoked.revoke(Utc::now());
    ctx.store.commit(Change::of(Write::UpdateKey { key: revoked, expected_version: first.version })).await.unwrap();
    ctx.store.commit(insert(&twin, None)).await.unwrap();

    let mut imported = key(&ws, "imported");
    imported.lookup_prefix = Some("zz_".into());
    ctx.store.commit(insert(&imported, None)).await.unwrap();
    let mut again = key(&ws, "imported again");
    again.lookup_prefix = Some("zz_".into());
    again.secret = imported.secret;
    assert!(matches!(ctx.store.commit(insert(&again, None)).await, Err(StoreError::Conflict(Unique::ImportedSecret))));
    let found = ctx.store.find_key_by_lookup_hash(&[[0u8; 32], imported.secret.digest]).await.unwrap();
    assert_eq!(found.map(|k| k.id), Some(imported.id));
    assert_eq!(ctx.store.list_lookup_prefixes().await.unwrap(), vec!["zz_".to_owned()]);
}

async fn usage_of_deleted_keys_is_dropped_and_counts_add_up(ctx: Ctx) {
    let ws = workspace(&*ctx.store, None).await;
    let (live, gone) = (key(&ws, "live"), key(&ws, "gone"));
    ctx.store.commit(insert(&live, None)).await.unwrap();
    ctx.store.commit(insert(&gone, None)).await.unwrap();
    ctx.store
        .commit(Change::of(Write::DeleteKey {
            workspace_id: ws.id.clone(),
            id: gone.id.to_string(),
            expected_version: gone.version,
        }))
        .await
        .unwrap();
    // Noon, so that 30 seconds earlier is the same day whenever this runs.
    let now = Utc::now().date_naive().and_hms_opt(12, 0, 0).unwrap().and_utc();
    let delta = |k: &ApiKey, count, at: chrono::DateTime<Utc>| UsageDelta {
        key_id: k.id.clone(),
        hour: at,
        counts: vec![("VALID", count), ("INVALID_SECRET", 1)],
        last_used_at: Some(at),
    };
    // Two nodes flush counts for the same key and hour: they add up, per code.
    ctx.store.record_usage(&[delta(&live, 3, now), delta(&gone, 5, now)]).await.unwrap();
    ctx.store.record_usage(&[delta(&live, 4, now - Duration::seconds(30))]).await.unwrap();
    let since = now - Duration::days(1);
    let rollups = ctx.store.key_rollups(&live.id, since).await.unwrap();
    let at = |h: chrono::DateTime<Utc>| h.timestamp() - h.timestamp().rem_euclid(3600);
    let got: Vec<_> = rollups.iter().map(|r| (r.hour.timestamp(), r.code.as_str(), r.count)).collect();
    assert_eq!(
        got,
        vec![
            (at(now - Duration::seconds(30)), "INVALID_SECRET", 1),
            (at(now - Duration::seconds(30)), "VALID", 4),
            (at(now), "INVALID_SECRET", 1),
            (at(now), "VALID", 3)
        ]
    );
    assert!(ctx.store.key_rollups(&gone.id, since).await.unwrap().is_empty());
    // The workspace's hours count successes only; pruning drops old hours.
    let days = ctx.store.key_days(&ws.id, since).await.unwrap();
    assert_eq!(days.iter().map(|(_, _, c)| c).sum::<u64>(), 7);
    assert!(days.iter().all(|(k, d, _)| *k == *live.id && d.timestamp() % 86400 == 0));
    assert_eq!(ctx.store.prune_rollups(now).await.unwrap(), 2);
    assert_eq!(ctx.store.key_rollups(&live.id, since).await.unwrap().len(), 2);
    // last_used_at only moves forward.
    let stored = ctx.store.find_key(&live.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at.map(|t| t.timestamp_millis()), Some(now.timestamp_millis()));
    // One flush naming a key twice (a key whose cache entry was replaced
    // while its counts waited): the counts add up, the later use stands.
    let (later, earlier) = (now + Duration::seconds(2), now + Duration::seconds(1));
    ctx.store.record_usage(&[delta(&live, 2, later), delta(&live, 5, earlier)]).await.unwrap();
    let rollups = ctx.store.key_rollups(&live.id, since).await.unwrap();
    let got: Vec<_> = rollups.iter().map(|r| (r.hour.timestamp(), r.code.as_str(), r.count)).collect();
    assert_eq!(got, vec![(at(now), "INVALID_SECRET", 3), (at(now), "VALID", 10)]);
    let stored = ctx.store.find_key(&live.id).await.unwrap().unwrap();
    assert_eq!(stored.last_used_at.map(|t| t.timestamp_millis()), Some(later.timestamp_millis()));
}

async fn pages_are_newest_first_with_cursors_and_filters(ctx: Ctx) {
    let ws = workspace(&*ctx.store, None).await;
    for i in 0..25 {
        ctx.store.commit(insert(&key(&ws, &format!("Key_{i:02}")), None)).await.unwrap();
    }
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let page = ctx.store.list_keys(&ws.id, &KeyFilter::default(), Page { after, limit: 10 }).await.unwrap();
        names.extend(page.keys.iter().map(|k| k.name.clone()));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("Key_{i:02}")).collect();
    assert_eq!(names, expected);

    // Case-insensitive substring; `_` is a character, not a wildcard.
    let filter = KeyFilter { name_contains: Some("KEY_1".into()), ..Default::default() };
    let page = ctx.store.list_keys(&ws.id, &filter, Page { after: None, limit: 100 }).await.unwrap();
    assert_eq!(page.keys.len(), 10);
    let filter = KeyFilter { name_contains: Some("y%".into()), ..Default::default() };
    assert!(ctx.store.list_keys(&ws.id, &filter, Page { after: None, limit: 100 }).await.unwrap().keys.is_empty());
    let filter = KeyFilter { state: Some(KeyState::Revoked), ..Default::default() };
    assert!(ctx.store.list_keys(&ws.id, &filter, Page { after: None, limit: 100 }).await.unwrap().keys.is_empty());
    assert_eq!(ctx.store.count_keys().await.unwrap(), 25);
    assert_eq!(ctx.store.list_workspaces().await.unwrap().len(), 1);
}

async fn one_refused_change_does_not_undo_others_committed_with_it(ctx: Ctx) {
    let ws = workspace(&*ctx.store, None).await;
    let dup = key(&ws, "dup");
    ctx.store.commit(insert(&dup, None)).await.unwrap();
    // Many concurrent changes, some refused: the group commit must answer
    // each on its own.
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = ctx.store.clone();
            let k = if i % 3 == 0 { key(&ws, "dup") } else { key(&ws, &format!("ok {i}")) };
            tokio::spawn(async move { store.commit(insert(&k, None)).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(Unique::KeyName)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 40);
    assert_eq!(ctx.store.count_keys().await.unwrap(), 41);
}

async fn bootstrap_marker_is_claimed_once(ctx: Ctx) {
    let claim = || Change::of(Write::InsertMeta { name: "marker".into(), value: "x".into() });
    ctx.store.commit(claim()).await.unwrap();
    assert!(matches!(ctx.store.commit(claim()).await, Err(StoreError::Conflict(_))));
    assert_eq!(ctx.store.meta_get_or_set("marker", "y").await.unwrap(), "x");
}

#[test]
fn every_migration_exists_for_both_backends() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let names = |backend: &str| {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(backend))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (sqlite, postgres) = (names("sqlite"), names("postgres"));
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "migrations are paired by name across backends");
}

async fn identities_hold_their_keys_limits_and_unique_external_ids(ctx: Ctx) {
    use keyward_core::identity::Identity;
    use keyward_core::ratelimit::RateLimit;
    let store = ctx.store.as_ref();
    let ws = workspace(store, None).await;
    let limit = RateLimit { name: "requests".into(), limit: 100, duration_ms: 60_000, auto_apply: true };
    // Stored times have millisecond precision.
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let acme = Identity::new("id_acme".into(), &ws.id, "acme".into(), None, vec![limit.clone()], now).unwrap();
    // The identity and its first key commit together.
    let mut k = key(&ws, "acme key");
    k.identity = Some(acme.as_key_identity());
    k.ratelimits = vec![RateLimit { name: "tokens".into(), auto_apply: false, ..limit.clone() }];
    let mut change = Change::of(Write::InsertIdentity(acme.clone()));
    change.push(Write::InsertKey { key: k.clone(), max_live_keys: None });
    store.commit(change).await.unwrap();
    let read = store.find_key(&k.id).await.unwrap().unwrap();
    assert_eq!((read.identity.clone(), read.ratelimits.clone()), (k.identity.clone(), k.ratelimits.clone()));
    assert_eq!(store.identity_by_external_id(&ws.id, "acme").await.unwrap().unwrap(), acme);
    assert_eq!(store.find_identity("id_acme").await.unwrap().unwrap().ratelimits, vec![limit]);
    // External ids are unique per workspace.
    let twin = Identity { id: "id_twin".into(), ..acme.clone() };
    let refused = store.commit(Change::of(Write::InsertIdentity(twin))).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Unique::IdentityExternalId))), "{refused:?}");
    // Kept while a live key belongs to it; its revoked keys are detached.
    let delete = || Change::of(Write::DeleteIdentity { workspace_id: ws.id.clone(), id: acme.id.clone() });
    assert!(matches!(store.commit(delete()).await, Err(StoreError::InUse)));
    let mut revoked = read.clone();
    revoked.revoke(Utc::now());
    store.commit(Change::of(Write::UpdateKey { key: revoked, expected_version: read.version })).await.unwrap();
    store.commit(delete()).await.unwrap();
    assert!(store.find_identity("id_acme").await.unwrap().is_none());
    assert_eq!(store.find_key(&k.id).await.unwrap().unwrap().identity, None);
    assert!(matches!(store.commit(delete()).await, Err(StoreError::NotFound)));
}

fn audit(ws: &Workspace, action: &str, target: &str) -> Write {
    use keyward_core::audit::{Actor, Event, Outcome, Target};
    Write::Audit(keyward_store::AuditWrite {
        event: Event {
            workspace_id: ws.id.clone(),
            at: Utc::now(),
            actor: Actor::system(),
            action: action.to_owned(),
            target: Target::new("api_key", target, None),
            ip: None,
            user_agent: None,
            outcome: Outcome::Success,
            changes: "{}".to_owned(),
        },
        key: Arc::new(keyward_core::audit::AuditKey::new([5; 32])),
    })
}

async fn audit_chains_stay_whole_under_concurrent_appends_from_two_nodes(ctx: Ctx) {
    use keyward_core::audit::{AuditKey, ChainCheck};
    let ws = workspace(&*ctx.store, None).await;
    let other = keyward_store::open(&ctx.url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { ctx.store.clone() } else { other.clone() };
        let write = audit(&ws, "key.created", &format!("key_{i}"));
        tasks.push(tokio::spawn(async move { store.commit(Change::of(write)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // A refused change leaves no entry behind.
    let stale = Write::DeleteKey { workspace_id: ws.id.clone(), id: "key_none".into(), expected_version: 1 };
    let mut change = Change::of(audit(&ws, "key.deleted", "key_none"));
    change.push(stale);
    assert!(ctx.store.commit(change).await.is_err());

    let entries = ctx.store.audit_chain(&ws.id, 0, 1000).await.unwrap();
    assert_eq!(entries.len(), 40);
    let mut check = ChainCheck::new(AuditKey::new([5; 32]));
    for e in &entries {
        check.next(e).unwrap();
    }
    let (seq, hash) = ctx.store.audit_head(&ws.id).await.unwrap().unwrap();
    assert_eq!((seq, hash), check.head());

    // Newest first, filtered, in pages.
    let filter = keyward_store::AuditFilter { target: Some("key_4".into()), ..Default::default() };
    let (found, next) = ctx.store.list_audit(&ws.id, &filter, Page { after: None, limit: 10 }).await.unwrap();
    assert_eq!((found.len(), next), (1, None));
    let all = keyward_store::AuditFilter::default();
    let (first, next) = ctx.store.list_audit(&ws.id, &all, Page { after: None, limit: 25 }).await.unwrap();
    assert_eq!(first[0].seq, 40);
    let (rest, last) = ctx.store.list_audit(&ws.id, &all, Page { after: next, limit: 25 }).await.unwrap();
    assert_eq!((rest.len(), rest.last().map(|e| e.seq), last), (15, Some(1), None));
}

async fn pgp_keys_keep_their_sealed_part_and_unique_names(ctx: Ctx) {
    use keyward_core::pgp::{KeyInfo, PgpKey};
    use keyward_core::sealed::SealedSecret;
    use keyward_store::{AccessWrite, PgpWrite, SealedKind};
    let store = ctx.store.as_ref();
    let ws = workspace(store, None).await;
    let at = chrono::DateTime::from_timestamp_millis(1_780_000_000_123).unwrap();
    let key = |id: &str, name: &str, private: bool| PgpKey {
        id: id.into(),
        workspace_id: ws.id.clone(),
        name: name.into(),
        description: Some("drop".into()),
        info: KeyInfo {
            fingerprint: "CD05C64F91092F075443D347DADBE2F6E1DC9A84".into(),
            key_id: "DADBE2F6E1DC9A84".into(),
            algorithm: "RSA 3072".into(),
            user_ids: vec!["A <a@example.com>".into(), "B".into()],
            created_at: at - Duration::days(3),
            expires_at: Some(at + Duration::days(30)),
            revoked: false,
            private,
            has_passphrase: private,
        },
        public_key: "-----BEGIN PGP PUBLIC KEY BLOCK-----".into(),
        uploaded_at: at,
        updated_at: at,
    };
    let sealed = SealedSecret { key_id: "mk_old".into(), blob: vec![1, 2, 3] };
    let upload =
        |k: PgpKey, sealed: Option<SealedSecret>| Change::of(Write::Pgp(PgpWrite::InsertKey { key: k, sealed }));
    store.commit(upload(key("pgp_b", "b public", false), None)).await.unwrap();
    store.commit(upload(key("pgp_a", "a private", true), Some(sealed.clone()))).await.unwrap();
    let listed = store.list_pgp_keys(&ws.id).await.unwrap();
    assert_eq!(listed, [key("pgp_a", "a private", true), key("pgp_b", "b public", false)], "by name, as written");
    assert_eq!(store.pgp_sealed(&ws.id, "pgp_a").await.unwrap(), Some(sealed.clone()));
    assert_eq!(store.pgp_sealed(&ws.id, "pgp_b").await.unwrap(), None);
    assert!(store.get_pgp_key("other workspace", "pgp_a").await.unwrap().is_none());
    // Names are unique per workspace.
    let refused = store.commit(upload(key("pgp_c", "b public", false), None)).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Unique::PgpKeyName))), "{refused:?}");
    let rename = PgpKey { name: "b public".into(), ..key("pgp_a", "a private", true) };
    let refused = store.commit(Change::of(Write::Pgp(PgpWrite::UpdateKey(rename)))).await;
    assert!(matches!(refused, Err(StoreError::Conflict(Unique::PgpKeyName))), "{refused:?}");
    let rename = PgpKey { name: "a renamed".into(), description: None, ..key("pgp_a", "a private", true) };
    store.commit(Change::of(Write::Pgp(PgpWrite::UpdateKey(rename.clone())))).await.unwrap();
    assert_eq!(store.get_pgp_key(&ws.id, "pgp_a").await.unwrap(), Some(rename));
    // The private part is re-wrapped with the other sealed secrets.
    assert!(store.master_keys_in_use().await.unwrap().contains(&"mk_old".to_owned()));
    assert_eq!(
        store.sealed_not_under("mk_new", 10).await.unwrap(),
        [(SealedKind::PgpKey, "pgp_a".to_owned(), sealed.clone())]
    );
    let rewrap = |kind, sealed| {
        let write = AccessWrite::RewrapSealed { kind, key_id: "pgp_a".into(), from_master: "mk_old".into(), sealed };
        store.commit(Change::of(Write::Access(write)))
    };
    let rewrapped = SealedSecret { key_id: "mk_new".into(), blob: vec![4, 5] };
    rewrap(SealedKind::PgpKey, rewrapped.clone()).await.unwrap();
    assert_eq!(store.pgp_sealed(&ws.id, "pgp_a").await.unwrap(), Some(rewrapped.clone()));
    assert!(store.sealed_not_under("mk_new", 10).await.unwrap().is_empty());
    // A key's sealed secret under the same id (an imported key may take
    // any id) is another record: re-wrapping it leaves the PGP key alone.
    let mut imported = crate::key(&ws, "imported");
    imported.id = "pgp_a".into();
    store.commit(Change::of(Write::InsertKey { key: imported, max_live_keys: None })).await.unwrap();
    let secret = SealedSecret { key_id: "mk_old".into(), blob: vec![7] };
    let seal = AccessWrite::SealSecret { key_id: "pgp_a".into(), sealed: secret.clone() };
    store.commit(Change::of(Write::Access(seal))).await.unwrap();
    assert_eq!(
        store.sealed_not_under("mk_new", 10).await.unwrap(),
        [(SealedKind::KeySecret, "pgp_a".to_owned(), secret)]
    );
    let again = SealedSecret { key_id: "mk_new".into(), blob: vec![8] };
    rewrap(SealedKind::KeySecret, again.clone()).await.unwrap();
    assert_eq!(store.sealed_secret("pgp_a").await.unwrap(), Some(again));
    assert_eq!(store.pgp_sealed(&ws.id, "pgp_a").await.unwrap(), Some(rewrapped));
    assert!(store.sealed_not_under("mk_new", 10).await.unwrap().is_empty());
    store.commit(Change::of(Write::Access(AccessWrite::DropSealed { key_id: "pgp_a".into() }))).await.unwrap();
    // Deleted with its sealed part.
    let delete = || Change::of(Write::Pgp(PgpWrite::DeleteKey { workspace_id: ws.id.clone(), id: "pgp_a".into() }));
    store.commit(delete()).await.unwrap();
    assert!(matches!(store.commit(delete()).await, Err(StoreError::NotFound)));
    assert_eq!(store.pgp_sealed(&ws.id, "pgp_a").await.unwrap(), None);
    assert_eq!(store.master_keys_in_use().await.unwrap(), Vec::<String>::new());
}

/// Bulk inserts write many keys a statement and the rest one by one: 450
/// keys (two full statements and 50 single rows), of varied shapes, read
/// back as they were written.
async fn bulk_inserted_keys_read_back_as_written(ctx: Ctx) {
    let ws = workspace(&*ctx.store, None).await;
    let keys: Vec<ApiKey> = (0..450)
        .map(|i| {
            let draft = KeyDraft {
                name: Some(format!("bulk {i}")),
                description: (i % 5 == 0).then(|| format!("described {i}")),
                scopes: if i % 7 == 0 { vec!["read".into(), format!("s{i}:write")] } else { Vec::new() },
                metadata: (i % 3 == 0).then(|| serde_json::json!({"n": i})),
                credits: (i % 11 == 0).then_some(keyward_core::credits::Credits { remaining: i, refill: None }),
                expires_at: (i % 13 == 0).then(|| Utc::now() + Duration::days(i + 1)),
                ..Default::default()
            };
            let valid = draft.validate(&ws, Utc::now()).unwrap();
            let secret = token::generate(&ws.token_prefix, Environment::Live);
            let parsed = token::parse(secret.expose()).unwrap();
            valid.into_key(parsed.key_id(), &ws.id, token::mask(secret.expose()), hasher().native(&parsed), Utc::now())
        })
        .collect();
    ctx.store.insert_keys_bulk(&keys).await.unwrap();
    for (i, want) in keys.iter().enumerate() {
        let got = ctx.store.find_key(&want.id).await.unwrap().unwrap_or_else(|| panic!("key {i} is stored"));
        assert_eq!(got.name, want.name, "key {i}");
        assert_eq!(got.description, want.description, "key {i}");
        assert_eq!(got.scopes, want.scopes, "key {i}");
        assert_eq!(got.metadata, want.metadata, "key {i}");
        assert_eq!(got.credits.map(|c| c.remaining), want.credits.map(|c| c.remaining), "key {i}");
        assert_eq!(got.expires_at.map(|t| t.timestamp_millis()), want.expires_at.map(|t| t.timestamp_millis()));
        assert_eq!(got.secret.digest, want.secret.digest, "key {i}");
        assert_eq!(got.workspace_id, ws.id);
    }
    let page = ctx.store.list_keys(&ws.id, &KeyFilter::default(), Page { limit: 500, after: None }).await.unwrap();
    assert_eq!(page.keys.len(), 450);
}

async fn integrations_are_made_once_found_by_site_id_and_lock(ctx: Ctx) {
    use keyward_core::integrations::{FtpAccess, Integrations as Stored};
    use keyward_core::sealed::SealedSecret;
    use keyward_store::{AccessWrite, IntegrationsWrite as W, SealedKind};
    let store = ctx.store.as_ref();
    let mut ws = workspace(store, None).await;
    // Stored to the millisecond.
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let made = Stored {
        workspace_id: ws.id.clone(),
        javascript_key_id: "key_js".into(),
        javascript_key: "kwpk_live_value".into(),
        rest_key_id: Some("key_rest".into()),
        ftp: FtpAccess {
            password_hash: "$argon2id$one".into(),
            enabled: true,
            password_set_at: now,
            locked: false,
            sealed: false,
        },
        created_at: now,
    };
    let sealed = SealedSecret { key_id: "mk_old".into(), blob: vec![1, 2, 3] };
    let insert = |sealed: Option<SealedSecret>| {
        Change::of(Write::Integrations(W::Insert { integrations: made.clone(), sealed }))
    };
    store.commit(insert(Some(sealed.clone()))).await.unwrap();
    // Once: a second node's insert loses.
    let again = store.commit(insert(None)).await;
    assert!(matches!(again, Err(StoreError::Conflict(Unique::Integrations))), "{again:?}");
    let read = |s: &Stored| Stored { ftp: FtpAccess { sealed: true, ..s.ftp.clone() }, ..s.clone() };
    assert_eq!(store.get_integrations(&ws.id).await.unwrap(), Some(read(&made)));
    // Found by the workspace id while it has no site id, then by the site id alone.
    assert_eq!(store.ftp_login(&ws.id).await.unwrap().map(|i| i.workspace_id), Some(ws.id.clone()));
    ws.site_id = Some("site_one".into());
    store.commit(Change::of(Write::UpdateWorkspace(ws.clone()))).await.unwrap();
    assert!(store.ftp_login(&ws.id).await.unwrap().is_none());
    assert_eq!(store.ftp_login("site_one").await.unwrap().map(|i| i.workspace_id), Some(ws.id.clone()));
    assert!(store.ftp_login("site_two").await.unwrap().is_none());
    let mut other = workspace(store, None).await;
    other.site_id = Some("site_one".into());
    let taken = store.commit(Change::of(Write::UpdateWorkspace(other))).await;
    assert!(matches!(taken, Err(StoreError::Conflict(Unique::SiteId))), "{taken:?}");
    // Wrong passwords count within their window, then lock (once).
    let window = now - Duration::minutes(15);
    for n in 1..=3 {
        assert_eq!(store.count_ftp_failure(&ws.id, window, now).await.unwrap(), Some(n));
    }
    let later = now + Duration::minutes(20);
    assert_eq!(store.count_ftp_failure(&ws.id, later - Duration::minutes(15), later).await.unwrap(), Some(1));
    assert_eq!(store.count_ftp_failure("ws_none", window, now).await.unwrap(), None);
    let lock = || Change::of(Write::Integrations(W::LockFtp { workspace_id: ws.id.clone(), at: now }));
    store.commit(lock()).await.unwrap();
    assert!(matches!(store.commit(lock()).await, Err(StoreError::NotFound)), "locked already");
    assert!(store.get_integrations(&ws.id).await.unwrap().unwrap().ftp.locked);
    // A new password lifts the lock; without a sealed copy, none is kept.
    let set = W::SetFtpPassword { workspace_id: ws.id.clone(), hash: "$argon2id$two".into(), sealed: None, at: later };
    store.commit(Change::of(Write::Integrations(set))).await.unwrap();
    let now_stored = store.get_integrations(&ws.id).await.unwrap().unwrap();
    assert_eq!((now_stored.ftp.locked, now_stored.ftp.sealed), (false, false));
    assert_eq!(now_stored.ftp.password_hash, "$argon2id$two");
    assert_eq!(store.ftp_sealed(&ws.id).await.unwrap(), None);
    // A sealed copy is re-wrapped with the other sealed secrets.
    let set = W::SetFtpPassword {
        workspace_id: ws.id.clone(),
        hash: "$argon2id$3".into(),
        sealed: Some(sealed.clone()),
        at: later,
    };
    store.commit(Change::of(Write::Integrations(set))).await.unwrap();
    assert!(store.master_keys_in_use().await.unwrap().contains(&"mk_old".to_owned()));
    assert_eq!(store.sealed_not_under("mk_new", 10).await.unwrap(), [(SealedKind::FtpPassword, ws.id.clone(), sealed)]);
    let rewrapped = SealedSecret { key_id: "mk_new".into(), blob: vec![9] };
    let rewrap = AccessWrite::RewrapSealed {
        kind: SealedKind::FtpPassword,
        key_id: ws.id.clone(),
        from_master: "mk_old".into(),
        sealed: rewrapped.clone(),
    };
    store.commit(Change::of(Write::Access(rewrap))).await.unwrap();
    assert_eq!(store.ftp_sealed(&ws.id).await.unwrap(), Some(rewrapped));
    assert!(store.sealed_not_under("mk_new", 10).await.unwrap().is_empty());
    // Disabled and enabled; the REST key follows only from the one it was.
    let enable = |enabled| Change::of(Write::Integrations(W::SetFtpEnabled { workspace_id: ws.id.clone(), enabled }));
    store.commit(enable(false)).await.unwrap();
    assert!(!store.get_integrations(&ws.id).await.unwrap().unwrap().ftp.enabled);
    store.commit(enable(true)).await.unwrap();
    let rest = |was: Option<&str>, key_id: &str| {
        let w = W::SetRestKey { workspace_id: ws.id.clone(), was: was.map(str::to_owned), key_id: key_id.into() };
        Change::of(Write::Integrations(w))
    };
    assert!(matches!(store.commit(rest(Some("key_other"), "key_new")).await, Err(StoreError::NotFound)));
    assert!(matches!(store.commit(rest(None, "key_new")).await, Err(StoreError::NotFound)));
    store.commit(rest(Some("key_rest"), "key_new")).await.unwrap();
    assert_eq!(store.get_integrations(&ws.id).await.unwrap().unwrap().rest_key_id.as_deref(), Some("key_new"));
    // A rolled JavaScript key's value; any other key's roll changes nothing.
    let rolled = |key_id: &str| {
        Change::of(Write::Integrations(W::JavascriptRolled { key_id: key_id.into(), token: "kwpk_live_new".into() }))
    };
    store.commit(rolled("key_unrelated")).await.unwrap();
    store.commit(rolled("key_js")).await.unwrap();
    assert_eq!(store.get_integrations(&ws.id).await.unwrap().unwrap().javascript_key, "kwpk_live_new");
}

/// The outbox and the scheduler's lease, seen by two nodes: an event goes
/// to each subscribed, enabled endpoint only; a claimed delivery is not
/// claimed again while its lease holds; a notice is emitted once; one node
/// holds the lease until it lapses.
async fn webhook_events_fan_out_claims_and_leases_hold_across_nodes(ctx: Ctx) {
    use keyward_core::sealed::SealedSecret;
    use keyward_core::webhook::{Endpoint, Subscription};
    use keyward_store::webhooks::{OutboxEvent, StoredSecret, WebhooksWrite as W};
    let store = ctx.store.as_ref();
    let other = keyward_store::open(&ctx.url).await.unwrap();
    let ws = workspace(store, None).await;
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let endpoint = |id: &str, events: &[&str], enabled: bool| Endpoint {
        id: id.into(),
        workspace_id: ws.id.clone(),
        url: format!("https://hooks.example.com/{id}"),
        description: None,
        events: Subscription::parse(&events.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap(),
        enabled,
        disabled_reason: None,
        failing_since: None,
        created_at: now,
        updated_at: now,
    };
    for (id, events, enabled) in [
        ("wh_all", &["*"][..], true),
        ("wh_keys", &["key.*"][..], true),
        ("wh_off", &["*"][..], false),
        ("wh_members", &["member.joined"][..], true),
    ] {
        let secret = StoredSecret {
            id: format!("whsec_{id}"),
            endpoint_id: id.into(),
            sealed: SealedSecret { key_id: "mk_test".into(), blob: vec![1, 2, 3] },
            created_at: now,
            expires_at: None,
        };
        let insert = W::InsertEndpoint { endpoint: endpoint(id, events, enabled), secret };
        store.commit(Change::of(Write::Webhooks(insert))).await.unwrap();
    }
    let event = |id: &str, t: &str| OutboxEvent {
        workspace_id: ws.id.clone(),
        id: id.into(),
        event_type: t.into(),
        payload: "{}".into(),
        at: now,
    };
    store.commit(Change::of(Write::Webhooks(W::Emit(event("msg_1", "key.created"))))).await.unwrap();
    let notice = |id: &str| W::Notice {
        subject: "key_x".into(),
        kind: "unused".into(),
        mark: "1".into(),
        event: event(id, "key.unused"),
    };
    store.commit(Change::of(Write::Webhooks(notice("msg_2")))).await.unwrap();
    other.commit(Change::of(Write::Webhooks(notice("msg_3")))).await.unwrap();
    assert_eq!(store.pending_deliveries().await.unwrap(), 4, "two events to the two key endpoints; the notice once");

    let lease = now + chrono::Duration::seconds(60);
    let (a, b) = tokio::join!(store.claim_deliveries(now, lease, 3), other.claim_deliveries(now, lease, 3));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut claimed: Vec<(String, String)> =
        a.iter().chain(&b).map(|d| (d.endpoint_id.clone(), d.event_id.clone())).collect();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), a.len() + b.len(), "no delivery claimed twice");
    assert!(claimed.len() >= 3);
    let rest = store.claim_deliveries(now, lease, 10).await.unwrap();
    assert_eq!(claimed.len() + rest.len(), 4, "the rest, once");
    assert!(store.claim_deliveries(now, lease, 10).await.unwrap().is_empty(), "held until the lease ends");
    assert_eq!(
        store.claim_deliveries(lease, lease + chrono::Duration::seconds(60), 10).await.unwrap().len(),
        4,
        "then free again"
    );

    // One holder of a lease at a time; it renews; another takes over once it lapses.
    let until = now + chrono::Duration::seconds(30);
    assert!(store.claim_lease("notices", "node_a", now, until).await.unwrap());
    assert!(!other.claim_lease("notices", "node_b", now, until).await.unwrap());
    assert!(store.claim_lease("notices", "node_a", now, until).await.unwrap(), "a renewal");
    assert!(other.claim_lease("notices", "node_b", until, until + chrono::Duration::seconds(30)).await.unwrap());
    assert!(!store.claim_lease("notices", "node_a", until, until).await.unwrap());
}

async fn idempotency_keys_are_claimed_once_marked_with_the_change_and_expire(ctx: Ctx) {
    use keyward_core::sealed::SealedSecret;
    use keyward_store::idempotency::{IdempotencyClaim, IdempotencyScope, StoredAnswer};
    use keyward_store::{IdempotencyWrite as I, SealedKind};
    let store = ctx.store.clone();
    let other = keyward_store::open(&ctx.url).await.unwrap();
    let ws = workspace(store.as_ref(), None).await;
    let now = Utc::now();
    let scope = |key: &str| IdempotencyScope {
        workspace_id: "ws_1".into(),
        credential: "key:key_1".into(),
        key_hash: key.into(),
    };
    let claim = |key: &str, fingerprint: &str, at: chrono::DateTime<Utc>| {
        Write::Idempotency(I::Claim(IdempotencyClaim {
            scope: scope(key),
            fingerprint: fingerprint.into(),
            now: at,
            locked_until: at + Duration::seconds(60),
            expires_at: at + Duration::hours(24),
        }))
    };
    let held = |r: keyward_store::Result<()>| matches!(r, Err(StoreError::Conflict(Unique::IdempotencyKey)));
    // Two nodes' changes claim one key at once: one commits, the other is
    // refused whole (its key insert undone with it).
    let with_key = |key: &str, name: &str| Change {
        writes: vec![claim(key, "f1", now), Write::InsertKey { key: self::key(&ws, name), max_live_keys: None }],
    };
    let (a, b) = tokio::join!(store.commit(with_key("k1", "made by a")), other.commit(with_key("k1", "made by b")));
    assert_eq!(u8::from(a.is_ok()) + u8::from(b.is_ok()), 1, "one claim wins: {a:?} {b:?}");
    assert!(held(a) || held(b));
    let keys = store.list_keys(&ws.id, &KeyFilter::default(), Page { after: None, limit: 10 }).await.unwrap();
    assert_eq!(keys.keys.len(), 1, "the refused change made no key");
    let record = other.idempotency_record(&scope("k1"), now).await.unwrap().unwrap();
    assert_eq!((record.fingerprint.as_str(), record.committed, record.answer.is_none()), ("f1", true, true));
    assert!(record.locked_until > now);
    // A claimed key stays claimed until it expires.
    assert!(held(store.commit(Change::of(claim("k1", "f2", now + Duration::hours(23)))).await));
    // Its answer is kept, and read by the other node.
    let answer = StoredAnswer {
        status: 201,
        headers: r#"[["content-type","application/json"]]"#.into(),
        body: SealedSecret { key_id: "mk_test".into(), blob: vec![9, 8, 7] },
    };
    store
        .commit(Change::of(Write::Idempotency(I::Answer { scope: scope("k1"), answer: answer.clone() })))
        .await
        .unwrap();
    let kept = other.idempotency_record(&scope("k1"), now).await.unwrap().unwrap().answer.unwrap();
    assert_eq!((kept.status, kept.body.blob), (201, vec![9, 8, 7]));
    // A master key rotation re-wraps it with the other sealed secrets.
    let id = "ws_1 key:key_1 k1".to_owned();
    assert_eq!(
        store.sealed_not_under("mk_new", 10).await.unwrap(),
        [(SealedKind::IdempotentAnswer, id.clone(), answer.body)]
    );
    let rewrap = keyward_store::access::AccessWrite::RewrapSealed {
        kind: SealedKind::IdempotentAnswer,
        key_id: id,
        from_master: "mk_test".into(),
        sealed: SealedSecret { key_id: "mk_new".into(), blob: vec![6, 5] },
    };
    store.commit(Change::of(Write::Access(rewrap))).await.unwrap();
    assert!(store.sealed_not_under("mk_new", 10).await.unwrap().is_empty());
    let kept = other.idempotency_record(&scope("k1"), now).await.unwrap().unwrap();
    assert_eq!(kept.answer.unwrap().body.blob, vec![6, 5]);
    // Expired records are not found, are taken over by a new claim, and pruned.
    let expiry = now + Duration::hours(24);
    assert!(store.idempotency_record(&scope("k1"), expiry).await.unwrap().is_none());
    store.commit(Change::of(claim("k2", "f1", now))).await.unwrap();
    other.commit(Change::of(claim("k2", "f2", expiry))).await.expect("expired, taken over");
    let taken = store.idempotency_record(&scope("k2"), expiry).await.unwrap().unwrap();
    assert_eq!((taken.fingerprint.as_str(), taken.answer.is_none()), ("f2", true));
    assert_eq!(store.prune_idempotency(expiry).await.unwrap(), 1, "k1 only");
}
