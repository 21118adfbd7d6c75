//! MQTT 3.1.1 for a node: the few packets it needs ([`codec`]) and a poll-driven session
//! over any byte stream ([`session`]).
//!
//! Why not a client crate: `minimq` (0.13) speaks MQTT 5 only and needs an `embedded-nal`
//! TCP stack and an async runtime; `rust-mqtt` (0.6) is async (`embedded-io-async`) and
//! brings its own buffers and executor needs. A node here has a UART to a modem (or, under
//! QEMU, to a bridge): a plain byte stream with `embedded-io` 0.6 `Read`/`Write`/`ReadReady`,
//! driven from a main loop. A node needs CONNECT/CONNACK, PUBLISH QoS 1/PUBACK,
//! SUBSCRIBE/SUBACK, PINGREQ/PINGRESP: a few hundred lines, every length checked.

pub mod codec;
pub mod session;

pub use session::{Event, Session, SessionConfig};
