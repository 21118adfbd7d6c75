//! What the platform sends back to a device on `mekong/v1/{device_id}/down`: an
//! acknowledgement once a pack is durably stored, or a refusal with its reason.
//!
//! Both are one CBOR map with small integer labels:
//!
//! | label | field | in |
//! |---|---|---|
//! | 0 | `1` for an acknowledgement, `0` for a refusal | both |
//! | 1 | newest reading time in the pack, epoch milliseconds | ack |
//! | 2 | readings of the pack now stored (new and already stored alike) | ack |
//! | 3 | platform time when sent, epoch milliseconds (for the node's clock) | both |
//! | 4 | reason kind, such as `bad_time` | refusal |
//! | 5 | sequence number of the acknowledged or refused pack, for a signed pack only ([`crate::cose`]) | both |
//!
//! An acknowledgement is sent only after the pack's readings are flushed to disk: the MQTT
//! PUBACK only says the broker has the message. It covers exactly one pack, the one whose
//! newest reading time it names: a node frees that pack, and resends any older pack still
//! unacknowledged after a timeout (the broker may have dropped it under overload; resends are
//! idempotent). Unknown labels are ignored, so later versions can add fields.
//!
//! For a signed pack the acknowledgement also names its sequence number (label 5): that
//! number is durably stored with the pack, so the platform's last accepted number for the
//! device is now at least this one, and any envelope at or below it would be refused as a
//! replay. It identifies the pack more precisely than its newest reading time.
//!
//! A refusal is about the pack and final ([`crate::Reason`]). A pack the platform cannot
//! store for a reason of its own (a full disk) gets no downlink at all: the node resends it
//! after its timeout, as it does for a pack lost on the way.
//!
//! A refusal of a signed pack names its sequence number too, whenever the envelope was
//! well-formed enough to read it (so not for `bad_envelope` or `too_large`), so
//! a node with several packs in flight drops exactly the refused one. The number of a refusal
//! is not authenticated (the tag may be what failed): a node drops a pack only if the number
//! is one it sent and has not had answered.

use core::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap};
use serde::Deserializer as _;
use serde_cbor::ser::SliceWrite;

use crate::senml::EncodeError;
use crate::topic::PREFIX;

/// The longest reason kind a refusal carries.
pub const MAX_REASON_LEN: usize = 32;

/// A downlink message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downlink<'a> {
    /// The pack is durably stored.
    Ack {
        /// Newest reading time in the pack, epoch ms.
        up_to_ms: i64,
        /// Readings of the pack that are stored.
        readings: u32,
        /// Platform time, epoch ms.
        server_ms: i64,
        /// The pack's sequence number, for a signed pack.
        seq: Option<u64>,
    },
    /// The pack was refused for a reason of its own and will never be stored; resending it
    /// is pointless. (The platform's own trouble is never a refusal: it is silence.)
    Refused {
        /// Reason kind, a [`crate::Reason`] name ([`crate::Reason::as_str`]) for what this
        /// version sends; a name it does not know still decodes. At most [`MAX_REASON_LEN`]
        /// bytes.
        reason: &'a str,
        /// Platform time, epoch ms.
        server_ms: i64,
        /// The refused envelope's sequence number, when the pack was signed and its envelope
        /// could be read.
        seq: Option<u64>,
    },
}

/// Why a downlink message cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    /// Not well-formed CBOR, or not a map.
    #[error("invalid downlink cbor: {0}")]
    Cbor(serde_cbor::Error),
    /// A field is missing or of the wrong type.
    #[error("invalid downlink: {0}")]
    Invalid(&'static str),
}

impl Downlink<'_> {
    /// Encodes the message into `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut ser = serde_cbor::Serializer::new(SliceWrite::new(out));
        self.serialize(&mut ser).map_err(|_| EncodeError::BufferFull)?;
        Ok(ser.into_inner().bytes_written())
    }
}

impl Serialize for Downlink<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Downlink::Ack { up_to_ms, readings, server_ms, seq } => {
                let mut map = s.serialize_map(Some(if seq.is_some() { 5 } else { 4 }))?;
                map.serialize_entry(&0u8, &1u8)?;
                map.serialize_entry(&1u8, &up_to_ms)?;
                map.serialize_entry(&2u8, &readings)?;
                map.serialize_entry(&3u8, &server_ms)?;
                if let Some(seq) = seq {
                    map.serialize_entry(&5u8, &seq)?;
                }
                map.end()
            }
            Downlink::Refused { reason, server_ms, seq } => {
                let mut map = s.serialize_map(Some(if seq.is_some() { 4 } else { 3 }))?;
                map.serialize_entry(&0u8, &0u8)?;
                map.serialize_entry(&3u8, &server_ms)?;
                map.serialize_entry(&4u8, reason)?;
                if let Some(seq) = seq {
                    map.serialize_entry(&5u8, &seq)?;
                }
                map.end()
            }
        }
    }
}

/// Decodes a downlink message (what a node does with it).
pub fn decode(input: &[u8]) -> Result<Downlink<'_>, DownlinkError> {
    let mut scratch = [0u8; 0];
    let mut de = serde_cbor::Deserializer::from_slice_with_scratch(input, &mut scratch);
    let fields = de.deserialize_map(FieldsVisitor).map_err(DownlinkError::Cbor)?;
    de.end().map_err(DownlinkError::Cbor)?;
    let server_ms = fields.server_ms.ok_or(DownlinkError::Invalid("server time missing"))?;
    match fields.kind {
        Some(1) => Ok(Downlink::Ack {
            up_to_ms: fields.up_to_ms.ok_or(DownlinkError::Invalid("acknowledged time missing"))?,
            readings: fields.readings.ok_or(DownlinkError::Invalid("reading count missing"))?,
            server_ms,
            seq: fields.seq,
        }),
        Some(0) => Ok(Downlink::Refused {
            reason: fields.reason.ok_or(DownlinkError::Invalid("reason missing"))?,
            server_ms,
            seq: fields.seq,
        }),
        _ => Err(DownlinkError::Invalid("unknown message kind")),
    }
}

#[derive(Default)]
struct Fields<'a> {
    kind: Option<u8>,
    up_to_ms: Option<i64>,
    readings: Option<u32>,
    server_ms: Option<i64>,
    reason: Option<&'a str>,
    seq: Option<u64>,
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a downlink map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(label) = map.next_key::<u8>()? {
            match label {
                0 => fields.kind = Some(map.next_value()?),
                1 => fields.up_to_ms = Some(map.next_value()?),
                2 => fields.readings = Some(map.next_value()?),
                3 => fields.server_ms = Some(map.next_value()?),
                4 => {
                    let reason: &'de str = map.next_value()?;
                    if reason.len() > MAX_REASON_LEN {
                        return Err(de::Error::invalid_length(reason.len(), &"a short reason kind"));
                    }
                    fields.reason = Some(reason);
                }
                5 => fields.seq = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// The longest wait before a resend, as a multiple of the base timeout (before jitter).
pub const MAX_BACKOFF: u64 = 8;

/// How long a node waits for the answer to a pack's `attempts`-th send (1: the first) before
/// it sends the pack again: `timeout_ms` doubled for every send after the first, at most
/// [`MAX_BACKOFF`] times `timeout_ms`, plus `jitter` modulo half of that (so between one and
/// one and a half times the doubled wait). The firmware's rule (a 30 s timeout), and what the
/// README asks of a gateway: a slow platform gets fewer resends the longer it stays slow,
/// and a fleet that lost it at one moment comes back spread over the jitter.
pub fn resend_after_ms(timeout_ms: u64, attempts: u16, jitter: u32) -> u64 {
    let doublings = u32::from(attempts.saturating_sub(1)).min(MAX_BACKOFF.trailing_zeros());
    let wait = timeout_ms.saturating_mul(1 << doublings);
    wait.saturating_add(u64::from(jitter) % (wait / 2 + 1))
}

/// The jitter of one send for [`resend_after_ms`]: the node's seed
/// ([`resend_jitter_seed`]) mixed with the send's sequence number (a 32-bit finaliser, so
/// that neighbouring seeds and numbers give unrelated values).
pub fn resend_jitter(seed: u32, seq: u64) -> u32 {
    let mut x = seed ^ (seq as u32) ^ ((seq >> 32) as u32).rotate_left(16);
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// A node's jitter seed: the CRC-32 of its device id, which differs from node to node and is
/// known at boot.
pub fn resend_jitter_seed(device_id: &str) -> u32 {
    crate::provision::crc32(device_id.as_bytes())
}

/// Formats the downlink topic of a device without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Topic<'a>(pub &'a str);

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/down", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: Downlink<'_>) {
        let mut buf = [0u8; 64];
        let n = msg.encode(&mut buf).unwrap();
        assert_eq!(decode(&buf[..n]).unwrap(), msg);
    }

    #[test]
    fn acks_and_refusals_round_trip() {
        round_trip(Downlink::Ack {
            up_to_ms: 1_790_000_000_250,
            readings: 150,
            server_ms: 1_790_000_001_000,
            seq: None,
        });
        round_trip(Downlink::Ack {
            up_to_ms: 1_790_000_000_250,
            readings: 1,
            server_ms: 1_790_000_001_000,
            seq: Some(0),
        });
        round_trip(Downlink::Ack { up_to_ms: 1, readings: 1, server_ms: 2, seq: Some(u64::MAX) });
        round_trip(Downlink::Refused { reason: "bad_time", server_ms: 1_790_000_001_000, seq: None });
        round_trip(Downlink::Refused { reason: "replayed", server_ms: 1_790_000_001_000, seq: Some(7) });
    }

    /// The README's examples of refusals: without a sequence number (a plain pack), and of
    /// the signed pack with sequence number 1, which adds `05 01`.
    #[test]
    fn a_refusal_of_a_signed_pack_names_its_sequence_number() {
        let hex = |msg: Downlink<'_>| {
            let mut buf = [0u8; 64];
            let n = msg.encode(&mut buf).unwrap();
            buf[..n].iter().map(|b| std::format!("{b:02x}")).collect::<std::string::String>()
        };
        let server_ms = 1_790_000_061_234;
        assert_eq!(
            hex(Downlink::Refused { reason: "bad_time", server_ms, seq: None }),
            "a30000031b000001a0c4515b3204686261645f74696d65"
        );
        assert_eq!(
            hex(Downlink::Refused { reason: "bad_time", server_ms, seq: Some(1) }),
            "a40000031b000001a0c4515b3204686261645f74696d650501"
        );
    }

    #[test]
    fn an_ack_is_small() {
        let mut buf = [0u8; 64];
        let n = Downlink::Ack { up_to_ms: 1_790_000_000_250, readings: 3, server_ms: 1_790_000_001_000, seq: None }
            .encode(&mut buf)
            .unwrap();
        // {0: 1, 1: <u64>, 2: 3, 3: <u64>}
        assert_eq!(n, 1 + 2 + 10 + 2 + 10);
    }

    /// The README's example of an acknowledgement of a signed pack; labels unknown to a
    /// decoder are skipped, which is how a decoder of the first version reads label 5.
    #[test]
    fn the_sequence_number_is_label_5_and_unknown_labels_are_skipped() {
        let ack =
            Downlink::Ack { up_to_ms: 1_790_000_060_000, readings: 3, server_ms: 1_790_000_061_234, seq: Some(1) };
        let mut buf = [0u8; 64];
        let n = ack.encode(&mut buf).unwrap();
        let hex: std::string::String = buf[..n].iter().map(|b| std::format!("{b:02x}")).collect();
        assert_eq!(hex, "a50001011b000001a0c45156600203031b000001a0c4515b320501");
        // A map of the first version's fields followed by an unknown label still decodes.
        let mut with_unknown = buf[..n].to_vec();
        with_unknown[0] = 0xa6;
        with_unknown.extend_from_slice(&[0x18, 0x63, 0x63, b'n', b'e', b'w']);
        assert_eq!(decode(&with_unknown).unwrap(), ack);
    }

    #[test]
    fn malformed_downlinks_are_errors() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0xa1, 0x00, 0x01]).is_err(), "ack without fields");
        assert!(decode(&[0xa2, 0x00, 0x07, 0x03, 0x01]).is_err(), "unknown kind");
        assert!(decode(&[0x80]).is_err(), "not a map");
    }

    /// The waits double from the timeout up to eight times it, each stretched by at most a
    /// half, without overflow.
    #[test]
    fn resends_back_off_with_jitter() {
        let waits: std::vec::Vec<u64> = (1..=6).map(|a| resend_after_ms(30_000, a, 0)).collect();
        assert_eq!(waits, [30_000, 60_000, 120_000, 240_000, 240_000, 240_000]);
        assert_eq!(resend_after_ms(30_000, 1, 15_000), 45_000);
        assert_eq!(resend_after_ms(30_000, 1, 15_001), 30_000, "jitter wraps within half the wait");
        assert_eq!(resend_after_ms(30_000, 0, 7), 30_007, "attempt 0 waits like the first");
        assert_eq!(resend_after_ms(u64::MAX, 10, u32::MAX), u64::MAX, "no overflow");
        assert_ne!(resend_jitter_seed("hau-01"), resend_jitter_seed("hau-02"));
        let spread: std::collections::BTreeSet<u32> = (0..64).map(|seq| resend_jitter(7, seq) % 1000).collect();
        assert!(spread.len() > 50, "consecutive numbers give unrelated jitter: {}", spread.len());
    }

    #[test]
    fn the_topic_formats() {
        assert_eq!(std::format!("{}", Topic("hau-01")), "mekong/v1/hau-01/down");
    }
}
