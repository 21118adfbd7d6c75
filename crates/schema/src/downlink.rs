//! What the platform sends back to a device on `mekong/v1/{device_id}/down`: an
//! acknowledgement once a pack is durably stored, or a refusal with its reason.
//!
//! All are one CBOR map with small integer labels:
//!
//! | label | field | in |
//! |---|---|---|
//! | 0 | `1` for an acknowledgement, `0` for a refusal, `2` for a list of acknowledgements (version 2) | all |
//! | 1 | newest reading time in the pack, epoch milliseconds | ack, each item of label 6 |
//! | 2 | readings of the pack now stored (new and already stored alike) | ack, each item of label 6 |
//! | 3 | platform time when sent, epoch milliseconds (for the node's clock) | all |
//! | 4 | reason kind, such as `bad_time` | refusal |
//! | 5 | sequence number of the acknowledged or refused pack, for a signed pack only ([`crate::cose`]) | ack, refusal, each item of label 6 |
//! | 6 | the acknowledged packs: an array of 1 to [`MAX_BATCH`] maps, each with labels 1, 2 and (signed) 5 of one pack | list |
//!
//! **Versions.** Version 1 is the acknowledgement (kind 1) and the refusal (kind 0): one
//! downlink per pack. Version 2 adds the list (kind 2): one downlink that acknowledges
//! several packs of one device made durable by one flush, so that a node uploading a backlog
//! costs the broker one downlink per flush, not one per pack. A node opts in with the packs
//! it sends: a pack whose records carry the SenML extension label [`VERSION_LABEL`]
//! (`"mekong_dl"`, a text label, which RFC 8428 lets a receiver ignore) with a value of at
//! least [`VERSION_LIST`] says that its node reads version 2. The platform lists together
//! only packs that say so; every other pack gets its own version-1 acknowledgement, so a node
//! that never sends the label (every node before version 2) sees exactly what it always
//! saw, and a version-2 node talking to an older platform gets version 1 and reads it too.
//! A list of one pack is sent as a version-1 acknowledgement (it is shorter). Refusals stay
//! one per pack, in both versions, and a list never spans a refusal of its device: the
//! platform closes a device's list at each of its refusals, so the order of a device's
//! answers (which a refusal without a sequence number relies on) is kept.
//!
//! Version 3 sends no acknowledgement at all: the MQTT PUBACK is one. mekong's broker holds
//! the PUBACK of every QoS 1 publish on an uplink topic until the pack is durably stored or
//! refused (below), whatever the version, so a node whose packs carry [`VERSION_LABEL`] at
//! [`VERSION_PUBACK`] or above frees a pack at its PUBACK and needs no downlink subscription;
//! refusals still come on the downlink topic, to a node that subscribes to it. Such a node
//! relies on a platform of this version or later: an older one sends the PUBACK as soon as
//! its broker has the message (and lists of acknowledgements, which the node may not read).
//!
//! **The PUBACK.** A QoS 1 publish on an uplink topic is acknowledged (PUBACK) once its pack is
//! durably stored, or once it is refused: an MQTT 5 PUBACK then carries reason code 0x99,
//! payload format invalid (an MQTT 3.1.1 PUBACK has no code; the refusal downlink says why).
//! A pack the platform could not keep (the broker dropped it from its log under overload, or
//! a full disk) gets no PUBACK: the node resends it. The downlink acknowledgements of
//! versions 1 and 2 are sent at the same moment as the PUBACK.
//!
//! An acknowledgement is sent only after the pack's readings are flushed to disk. It covers
//! exactly one pack, the one whose
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
use serde::ser::{Serialize, SerializeMap, SerializeSeq};
use serde_cbor::ser::SliceWrite;

use crate::senml::EncodeError;
use crate::topic::PREFIX;

/// The longest reason kind a refusal carries.
pub const MAX_REASON_LEN: usize = 32;

/// The most packs one list of acknowledgements (version 2) names: a list of eight, with
/// sequence numbers above 2^32, is 172 bytes, which with its topic fits a node's receive
/// buffer of 320 bytes.
pub const MAX_BATCH: usize = 8;

/// The SenML extension label (a text label) by which a pack says which downlink version its
/// node reads; its value is an unsigned integer, such as [`VERSION_LIST`].
pub const VERSION_LABEL: &str = "mekong_dl";

/// The downlink version that adds lists of acknowledgements.
pub const VERSION_LIST: u8 = 2;

/// The downlink version whose acknowledgement is the PUBACK alone: no acknowledgement is
/// published on the downlink topic (refusals still are).
pub const VERSION_PUBACK: u8 = 3;

/// One acknowledged pack in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PackAck {
    /// Newest reading time in the pack, epoch ms.
    pub up_to_ms: i64,
    /// Readings of the pack that are stored.
    pub readings: u32,
    /// The pack's sequence number, for a signed pack.
    pub seq: Option<u64>,
}

/// The packs of a list of acknowledgements: 1 to [`MAX_BATCH`], without an allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckList {
    items: [PackAck; MAX_BATCH],
    len: u8,
}

impl AckList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pack; gives it back when the list is full.
    pub fn push(&mut self, ack: PackAck) -> Result<(), PackAck> {
        let slot = self.items.get_mut(usize::from(self.len)).ok_or(ack)?;
        *slot = ack;
        self.len += 1;
        Ok(())
    }

    /// The packs, in the order they were added.
    pub fn as_slice(&self) -> &[PackAck] {
        &self.items[..usize::from(self.len)]
    }

    /// How many packs it names.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether it names none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it names [`MAX_BATCH`] packs.
    pub fn is_full(&self) -> bool {
        self.len() == MAX_BATCH
    }
}

/// A downlink message.
// A list is a fixed array (no allocator on a node): the enum is as large as the list, about
// 280 bytes, which is fine for a value decoded once per downlink.
#[allow(clippy::large_enum_variant)]
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
    /// Several packs of the device are durably stored (version 2: only to a node whose packs
    /// carry [`VERSION_LABEL`]).
    Acks {
        /// The packs, each as an [`Downlink::Ack`] would name it.
        acks: AckList,
        /// Platform time, epoch ms.
        server_ms: i64,
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
            Downlink::Acks { ref acks, server_ms } => {
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry(&0u8, &2u8)?;
                map.serialize_entry(&3u8, &server_ms)?;
                map.serialize_entry(&6u8, &ItemsSer(acks.as_slice()))?;
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

struct ItemsSer<'a>(&'a [PackAck]);

impl Serialize for ItemsSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&ItemSer(item))?;
        }
        seq.end()
    }
}

struct ItemSer<'a>(&'a PackAck);

impl Serialize for ItemSer<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let PackAck { up_to_ms, readings, seq } = *self.0;
        let mut map = s.serialize_map(Some(if seq.is_some() { 3 } else { 2 }))?;
        map.serialize_entry(&1u8, &up_to_ms)?;
        map.serialize_entry(&2u8, &readings)?;
        if let Some(seq) = seq {
            map.serialize_entry(&5u8, &seq)?;
        }
        map.end()
    }
}

/// Decodes a downlink message (what a node does with it).
pub fn decode(input: &[u8]) -> Result<Downlink<'_>, DownlinkError> {
    let mut scratch = [0u8; 0];
    let mut de = serde_cbor::Deserializer::from_slice_with_scratch(input, &mut scratch);
    let fields =
        de::DeserializeSeed::deserialize(FieldsVisitor(Part::Message), &mut de).map_err(DownlinkError::Cbor)?;
    de.end().map_err(DownlinkError::Cbor)?;
    let server_ms = fields.server_ms.ok_or(DownlinkError::Invalid("server time missing"))?;
    match fields.kind {
        Some(1) => Ok(Downlink::Ack {
            up_to_ms: fields.up_to_ms.ok_or(DownlinkError::Invalid("acknowledged time missing"))?,
            readings: fields.readings.ok_or(DownlinkError::Invalid("reading count missing"))?,
            server_ms,
            seq: fields.seq,
        }),
        Some(2) => match fields.acks {
            Some(acks) if !acks.is_empty() => Ok(Downlink::Acks { acks, server_ms }),
            Some(_) => Err(DownlinkError::Invalid("empty list of acknowledgements")),
            None => Err(DownlinkError::Invalid("list of acknowledgements missing")),
        },
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
    acks: Option<AckList>,
}

/// What the visitor reads: the message, its list (label 6), or a pack of the list. One
/// visitor type for all three, so that the decoder is instantiated once (a node's flash is
/// small, and each visitor type costs a copy of serde_cbor's parser).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Message,
    List,
    Pack,
}

struct FieldsVisitor(Part);

impl<'de> de::DeserializeSeed<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Fields<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Part::Message => "a downlink map",
            Part::List => "a list of acknowledged packs",
            Part::Pack => "an acknowledged pack",
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        if self.0 == Part::List {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
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
                // A list only in the message: in a pack it is an unknown label, skipped, so
                // lists never nest.
                6 if self.0 == Part::Message => {
                    fields.acks = map.next_value_seed(FieldsVisitor(Part::List))?.acks;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }

    /// The list: 1 to [`MAX_BATCH`] maps, each with labels 1 and 2 (and 5); unknown labels in
    /// them are skipped, as in the message.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Fields<'de>, A::Error> {
        if self.0 != Part::List {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut list = AckList::new();
        while let Some(pack) = seq.next_element_seed(FieldsVisitor(Part::Pack))? {
            let ack = PackAck {
                up_to_ms: pack.up_to_ms.ok_or_else(|| de::Error::missing_field("1 (newest reading time)"))?,
                readings: pack.readings.ok_or_else(|| de::Error::missing_field("2 (readings)"))?,
                seq: pack.seq,
            };
            list.push(ack).map_err(|_| de::Error::invalid_length(MAX_BATCH + 1, &"at most MAX_BATCH packs"))?;
        }
        Ok(Fields { acks: Some(list), ..Fields::default() })
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

    fn list(items: &[(i64, u32, Option<u64>)]) -> AckList {
        let mut acks = AckList::new();
        for &(up_to_ms, readings, seq) in items {
            acks.push(PackAck { up_to_ms, readings, seq }).unwrap();
        }
        acks
    }

    fn hex_of(msg: &Downlink<'_>) -> std::string::String {
        let mut buf = [0u8; 256];
        let n = msg.encode(&mut buf).unwrap();
        buf[..n].iter().map(|b| std::format!("{b:02x}")).collect()
    }

    /// The README's example of a list (version 2): two packs of a plain device, then the
    /// same with sequence numbers; lists of 1 to MAX_BATCH round-trip.
    #[test]
    fn a_list_of_acknowledgements_names_each_pack() {
        let server_ms = 1_790_000_061_234;
        let plain =
            Downlink::Acks { acks: list(&[(1_790_000_060_000, 3, None), (1_790_000_060_500, 1, None)]), server_ms };
        assert_eq!(
            hex_of(&plain),
            "a30002031b000001a0c4515b320682a2011b000001a0c45156600203a2011b000001a0c45158540201"
        );
        for n in 1..=MAX_BATCH {
            let items: std::vec::Vec<_> =
                (0..n).map(|i| (1_790_000_000_000 + i as i64, 1, Some(u64::from(u32::MAX) + i as u64))).collect();
            let msg = Downlink::Acks { acks: list(&items), server_ms };
            round_trip_large(msg);
        }
        let full = list(&[(1, 1, None); MAX_BATCH]);
        assert!(full.is_full());
        assert_eq!(full.clone().push(PackAck::default()), Err(PackAck::default()));
    }

    fn round_trip_large(msg: Downlink<'_>) {
        let mut buf = [0u8; 256];
        let n = msg.encode(&mut buf).unwrap();
        // The biggest list with sequence numbers above 2^32 fits the firmware's receive
        // buffer (320 bytes) with the MQTT header (3), packet id (2) and a 64-character
        // device's topic (2 + 79).
        assert!(n <= 320 - 3 - 2 - 2 - 79, "{n} bytes");
        assert_eq!(decode(&buf[..n]).unwrap(), msg);
    }

    #[test]
    fn malformed_lists_are_errors() {
        // {0: 2, 3: 1} without label 6; with an empty list; with an item without a count.
        assert!(decode(&[0xa2, 0x00, 0x02, 0x03, 0x01]).is_err());
        assert!(decode(&[0xa3, 0x00, 0x02, 0x03, 0x01, 0x06, 0x80]).is_err());
        assert!(decode(&[0xa3, 0x00, 0x02, 0x03, 0x01, 0x06, 0x81, 0xa1, 0x01, 0x01]).is_err());
        // Nine items: one more than MAX_BATCH.
        let mut nine = std::vec![0xa3, 0x00, 0x02, 0x03, 0x01, 0x06, 0x89];
        for _ in 0..9 {
            nine.extend_from_slice(&[0xa2, 0x01, 0x01, 0x02, 0x01]);
        }
        assert!(decode(&nine).is_err());
        nine[6] = 0x88;
        nine.truncate(nine.len() - 5);
        assert!(matches!(decode(&nine), Ok(Downlink::Acks { acks, .. }) if acks.len() == 8));
        // A map where the list belongs, a list where the message belongs.
        assert!(decode(&[0xa3, 0x00, 0x02, 0x03, 0x01, 0x06, 0xa0]).is_err());
        assert!(decode(&[0x81, 0xa2, 0x01, 0x01, 0x02, 0x01]).is_err());
        // A list inside a pack is an unknown label there, skipped: lists never nest.
        let nested = [0xa3, 0x00, 0x02, 0x03, 0x01, 0x06, 0x81, 0xa3, 0x01, 0x01, 0x02, 0x01, 0x06, 0x81, 0xa0];
        assert!(matches!(decode(&nested), Ok(Downlink::Acks { acks, .. }) if acks.len() == 1));
        // Unknown labels in an item are skipped, as in the message.
        let item_with_unknown = [0xa3, 0x00, 0x02, 0x03, 0x01, 0x06, 0x81, 0xa3, 0x01, 0x01, 0x02, 0x01, 0x07, 0x00];
        assert!(
            matches!(decode(&item_with_unknown), Ok(Downlink::Acks { acks, .. }) if acks.as_slice() == [PackAck { up_to_ms: 1, readings: 1, seq: None }])
        );
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
