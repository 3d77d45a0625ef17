//! keyward's verification hot path, apart from the server: a presented
//! key's compact record ([`record`]), the records held in memory
//! ([`cache`]) with each key's use counted beside them ([`usage`]), and
//! the decision ([`decide`]). No IO and no async runtime: the server feeds
//! it from its store and invalidations; an embedded verifier can feed it
//! from a replication stream ([`replica`]); with the feature `client`,
//! `embedded` does (and `layer` protects a tower service with it).

pub mod cache;
#[cfg(feature = "client")]
pub mod clock;
pub mod decide;
#[cfg(feature = "client")]
pub mod embedded;
#[cfg(feature = "client")]
pub mod layer;
pub mod record;
pub mod replica;
pub mod usage;

pub use cache::{CacheKey, CachedKey, KeyCache, Lookup};
pub use record::{Interner, KeyRecord};
#[cfg(feature = "client")]
pub use {embedded::Verifier, layer::KeywardLayer};
