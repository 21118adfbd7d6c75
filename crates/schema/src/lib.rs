//! The mekong wire contract, shared by the platform and the edge firmware.
//!
//! Everything that crosses the network between a sensor node and the platform is defined here
//! and nowhere else:
//!
//! - [`topic`]: the MQTT topics (`mekong/v1/{device_id}/up`) and what a device id may be;
//! - [`senml`]: SenML packs (RFC 8428) in their CBOR form (section 6, integer labels) and
//!   their JSON form (section 5), with the resolution rules of section 4.6, an encoder (CBOR)
//!   that needs no allocator and decoders that borrow from the input;
//! - [`limits`]: the bounds a reading must respect to be accepted (time window, name lengths);
//! - [`naming`]: how a SenML name becomes a metric (device URNs in base names, LwM2M paths);
//! - [`metrics`]: the well-known metric names, their SenML units and the kind of station that
//!   reports them;
//! - [`cose`]: signed packs, a SenML pack in a COSE_Mac0 envelope (RFC 9052) with the
//!   device's key and a sequence number against replays;
//! - [`provision`]: the node's configuration blob (id, kind, key, broker, sampling periods, MQTT
//!   password) as `mekong device provision` writes it to flash;
//! - [`downlink`]: what the platform sends back on `mekong/v1/{device_id}/down`: an
//!   acknowledgement once a pack is durably stored, or a refusal;
//! - [`reason`]: the reason kinds a refusal names (a refusal is about the pack, never about
//!   the platform's own trouble).
//!
//! The crate is `no_std` and never allocates, so the firmware links the very code the server
//! decodes with. SenML-CBOR packs are read by the crate's own reader (`senml::cbor`), and
//! COSE envelopes by `cose`'s; packs are written, and downlinks read and written, through
//! `serde_cbor`, which is archived upstream (RUSTSEC-2021-0127): no other crate may name it,
//! so that it can be replaced here alone.
#![no_std]
#![warn(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod cose;
pub mod downlink;
pub mod limits;
pub mod metrics;
pub mod naming;
pub mod provision;
pub mod reason;
pub mod senml;
pub mod topic;
pub mod webhook;

pub use metrics::DeviceKind;
pub use reason::Reason;
pub use senml::{decode_pack, encode_pack, Base, DecodeError, EncodeError, Reading, Record, RecordError, Value};
pub use topic::{parse_uplink, TopicError};
