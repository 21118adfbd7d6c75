//! End-to-end tests of mekong over real sockets: the real broker, store and HTTP server in
//! one process, on ephemeral ports and a temporary data directory, driven by real MQTT
//! clients (rumqttc) and read back through the HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acknowledgements;
mod alerts;
mod bad_input;
mod booleans;
mod compact_points;
mod conformance;
mod dashboard;
mod device_removal;
mod end_to_end;
mod export;
mod full_disk;
mod mqtt_access;
mod openapi_fuzz;
mod overload;
mod platform;
mod restart;
mod retention;
mod security;
mod senml_json;
mod signed;
mod simulate;
mod stream;
mod tls;
