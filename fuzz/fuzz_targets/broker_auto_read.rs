//! Fuzzes what the vendored broker's listeners run since they serve both protocol versions
//! on one port: `rumqttd::protocol::auto::Auto`, which reads the first packet's protocol
//! level and from then on reads with the MQTT 3.1.1 or the MQTT 5 parser (vendored patch 14),
//! before any login is checked.
//!
//! Properties: those of `common::broker::read_all`, with the round trip for every packet
//! (written with the version the connection settled on).
#![no_main]

#[path = "common/broker.rs"]
mod broker;

use libfuzzer_sys::fuzz_target;
use rumqttd::protocol::auto::Auto;

fuzz_target!(|input: &[u8]| {
    broker::read_all(&mut Auto::default(), input, |_| true);
});
