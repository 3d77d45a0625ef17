//! Black-box tests of the HTTP API: the real server on a random port, a
//! fresh database per test, plain HTTP; each test on SQLite and PostgreSQL.

#[macro_use]
mod helpers;

mod audit;
mod auth;
mod authority;
mod authority_props;
mod browser;
mod compat;
mod console;
mod credits;
mod embedded;
mod envoy_grpc;
mod forward_auth;
mod ftp;
mod gnupg;
mod guards;
mod idempotency;
mod import;
mod integrations;
mod leaked;
mod lifecycle;
mod lockout;
mod members;
mod nginx;
mod oauth;
mod oauth_clients;
mod ops;
mod pgp;
#[path = "../support/python.rs"]
mod python;
mod ratelimits;
#[path = "../support/receiver.rs"]
mod receiver;
mod reveal;
mod roles;
mod validation;
mod verify;
mod webhooks;
