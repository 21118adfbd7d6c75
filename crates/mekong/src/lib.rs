//! The mekong platform as a library: configuration, the wiring of store, broker, ingest and
//! HTTP into one [`Platform`], TLS (`tls`, `https`), the fleet simulator and node
//! provisioning. The `mekong` binary is a thin command line over it, and the end-to-end tests start it in-process. The
//! benchmarks are a crate of their own (`crates/bench`), which runs the binary.
//!
//! This is the only crate that reads files and environment variables; the library crates get
//! their options as plain values.
#![warn(missing_docs)]

pub mod alerts;
pub mod backup;
pub mod config;
pub mod export;
pub mod exposure;
pub mod forward;
pub mod https;
pub mod identity;
pub mod platform;
pub mod provision;
pub mod registrar;
pub mod simulate;
pub mod tls;
pub mod token;
pub mod upkeep;

pub use config::Config;
pub use platform::Platform;
