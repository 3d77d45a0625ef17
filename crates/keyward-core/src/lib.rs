//! keyward's domain: what a key is, how its token looks, how its secret is
//! hashed, what its scopes allow and whether a presented key is good for a
//! request.
//!
//! # Layout
//! - [`token`]: the string a client presents (`kw_live_…`), generated from the
//!   OS CSPRNG, parsed by splitting and checked by a checksum before anything
//!   else looks at it.
//! - [`hash`]: the keyed hash stored instead of the secret, versioned by scheme.
//! - [`scope`]: tiers, `resource:action` permissions, flags and the question
//!   "does this key grant that permission?".
//! - [`authority`]: what a caller holds, and the one rule that what it hands
//!   out (keys, roles, invitations, tokens, revealed secrets) carries no
//!   more: [`authority::Authority::covers`].
//! - [`key`]: the key record and the validation of everything a caller may set
//!   on it (name, scopes, expiry, metadata…).
//! - [`workspace`]: the tenant and its key policy (limit, lifetimes).
//! - [`integrations`]: a workspace's JavaScript key, default REST key and
//!   FTP access (site id, generated password).
//! - [`verify`]: the verification decision, a pure function of a key, a
//!   request and the time.
//! - [`oauth`]: client ids, requested scopes, refresh-token rotation,
//!   signing-key records and the time rules of signed requests.
//! - [`error`]: the one error type, each with a stable machine code.
//!
//! This crate does no IO: no database, no network, no clock of its own (time
//! comes from the caller), so every rule is tested without sleeping.

pub mod audit;
pub mod authority;
pub mod code;
pub mod credits;
pub mod error;
pub mod expr;
pub mod hash;
pub mod identity;
pub mod ids;
pub mod integrations;
pub mod key;
pub mod member;
pub mod oauth;
pub mod origin;
pub mod pgp;
pub mod ratelimit;
pub mod route;
pub mod scope;
pub mod sealed;
pub mod token;
pub mod verify;
pub mod webhook;
pub mod workspace;

pub use code::Code;
pub use error::{Error, ErrorKind};
