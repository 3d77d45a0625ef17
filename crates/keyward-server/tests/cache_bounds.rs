//! The verifier's memory is bounded by configuration, not by traffic: a
//! flood of unknown (well-formed) keys fills only the bounded negative
//! cache and never pushes real keys out of memory.

use keyward_core::hash::SecretHasher;
use keyward_core::key::KeyDraft;
use keyward_core::token::{self, Environment};
use keyward_core::verify::{Request, VerifyCode};
use keyward_server::{ServerConfig, Services};
use keyward_verifier::cache::{CacheKey, Lookup};

#[tokio::test]
async fn unknown_key_flood_stays_bounded_and_keeps_real_keys_cached() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let store = keyward_store::open(&url).await.unwrap();
    let hasher = SecretHasher::new(&[3u8; 32]).unwrap();
    let config = ServerConfig { cache_capacity: 200, ..ServerConfig::default() };
    let services = Services::new(store, hasher, &config).await.unwrap();
    let created = services.workspaces.create_with_admin_key("bounds").await.unwrap();
    let mut real = Vec::new();
    for i in 0..50 {
        let draft = KeyDraft { name: Some(format!("real {i}")), ..Default::default() };
        let (_, secret) = services
            .keys
            .create(&keyward_server::principal::Principal::system(&created.workspace.id), draft)
            .await
            .unwrap();
        real.push(secret.expose().to_owned());
    }
    for _ in 0..5_000 {
        let made_up = token::generate("kw", Environment::Live);
        let v = services.verifier.verify(made_up.expose(), &Request::default(), None).await.unwrap();
        assert_eq!(v.decision.code, VerifyCode::NotFound);
    }
    let cache = services.verifier.cache();
    assert!(cache.absent_len() <= 2 * 200, "negative entries bounded: {}", cache.absent_len());
    for secret in &real {
        let parsed = token::parse(secret).unwrap();
        assert!(
            matches!(cache.get(&CacheKey::native(parsed.id), chrono::Utc::now().timestamp_millis()), Lookup::Hit(_)),
            "a real key was evicted by unknown ones"
        );
    }
}
