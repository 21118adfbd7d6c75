//! Fuzzes the vendored broker's MQTT 3.1.1 packet parser (`rumqttd::protocol::v4::V4`,
//! `Protocol::read_mut`), which reads every byte an MQTT 3.1.1 client sends, before any
//! login is checked. A panic there unwinds the connection's task and leaks its slot in
//! the router (vendor/rumqttd/MEKONG-PATCH.md).
//!
//! Properties: those of `common::broker::read_all`, with the round trip for every packet.
#![no_main]

#[path = "common/broker.rs"]
mod broker;

use libfuzzer_sys::fuzz_target;
use rumqttd::protocol::v4::V4;

fuzz_target!(|input: &[u8]| {
    broker::read_all(&mut V4, input, |_| true);
});
