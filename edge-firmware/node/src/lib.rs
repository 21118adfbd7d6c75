//! The logic of a mekong sensor node, for any board: sensor drivers, the sampling schedule,
//! SenML-CBOR packs (through `mekong-schema`, the wire contract), the store-and-forward
//! outbox, the MQTT 3.1.1 session, provisioning and the sequence counter.
//!
//! `no_std` and no allocator: every buffer is a fixed array sized at compile time, so the
//! RAM a node needs is known at link time and cannot grow in the field. The crate also builds
//! for the host, where `cargo test` runs its tests against the same code the image runs.
//!
//! A board binary supplies the hardware (serial ports, pins, a millisecond clock, the config
//! page in flash) and calls [`node::Node`] from its main loop; everything that decides what
//! goes on the wire lives here.
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod clock;
pub mod console;
pub mod crc;
pub mod drivers;
pub mod mqtt;
pub mod node;
pub mod outbox;
pub mod pack;
pub mod provision;
pub mod sample;
pub mod schedule;
pub mod seal;
pub mod seq;
pub mod sim;
pub mod station;
