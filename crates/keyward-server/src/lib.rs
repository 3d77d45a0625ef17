//! keyward's server: the services that manage and verify keys, and the
//! HTTP API around them.
//!
//! # Layout
//! - [`startup`]: wiring ([`Services`], [`Application`]) and shutdown.
//! - [`verifier`]: the verification hot path over [`cache`] and [`usage`].
//! - [`keys`], [`workspaces`], [`integrations`]: management operations,
//!   interface-agnostic.
//! - [`principal`]: who is calling and what they may do.
//! - [`app`]: the one app context, the router mounting the API and the console.
//! - [`api`]: axum handlers, extractors, error mapping, OpenAPI.
//! - [`console`]: the web console, server-rendered pages over the same services.
//! - [`telemetry`]: metrics recorder and logs.
//!
//! Only [`app`], [`api`] and [`console`] know HTTP; nothing here knows SQL.

pub mod api;
pub mod app;
pub mod audit;
pub mod clock;
pub mod console;
pub mod grpc;
pub mod idempotency;
pub mod identities;
pub mod insights;
pub mod integrations;
pub mod keys;
pub mod leaks;
pub mod linger;
pub mod members;
pub mod oauth;
pub mod pgp;
pub mod principal;
pub mod ratelimit;
pub mod replication;
pub mod roles;
pub mod startup;
pub mod telemetry;
pub mod throttle;
pub mod usage;
pub mod verifier;
pub mod webhooks;
pub mod work;
pub mod workspaces;

pub use startup::{Application, ServerConfig, Services, shutdown_signal};
