//! Fuzzes the vendored broker's MQTT 5 packet parser (`rumqttd::protocol::v5::V5`,
//! `Protocol::read_mut`), which reads every byte an MQTT 5 client sends, before any login
//! is checked. A panic there unwinds the connection's task and leaks its slot in the
//! router (upstream bytebeamio/rumqtt#812; vendor/rumqttd/MEKONG-PATCH.md).
//!
//! Properties: those of `common::broker::read_all`, with the round trip for every packet.
#![no_main]

#[path = "common/broker.rs"]
mod broker;

use libfuzzer_sys::fuzz_target;
use rumqttd::protocol::v5::V5;

fuzz_target!(|input: &[u8]| {
    broker::read_all(&mut V5, input, |_| true);
});
