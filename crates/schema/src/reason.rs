//! Why the platform refuses a pack: the reason kinds of the contract, as the refusal
//! downlink (label 4), the rejection log and the metrics name them.
//!
//! A refusal is final: the pack will never be stored, and a node drops it. So a reason is
//! always about the pack (its topic, bytes, signature or readings), never about the
//! platform: a pack the platform could not store because of its own trouble (a full disk)
//! gets no answer at all, and the node resends it after its timeout.

use core::fmt;

/// A reason kind. [`Reason::as_str`] is its name on the wire; names never change meaning,
/// and new kinds may be added (a node treats an unknown name as a refusal all the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The topic is not `mekong/v1/{device_id}/up` with a valid id.
    BadTopic,
    /// The platform requires registration and the device is not registered.
    UnknownDevice,
    /// The payload is larger than the platform accepts.
    TooLarge,
    /// The payload is empty.
    Empty,
    /// The payload is CBOR or JSON but not a SenML pack (an array of maps, of objects).
    NotSenml,
    /// The payload ends in the middle of an item.
    Truncated,
    /// Malformed CBOR, trailing bytes, nesting too deep, or indefinite-length strings.
    InvalidCbor,
    /// A SenML-JSON pack that is not well-formed JSON, or has escaped strings or deep nesting.
    InvalidJson,
    /// A record breaks a rule of RFC 8428 or of the contract not named by another kind.
    InvalidRecord,
    /// A field has the wrong CBOR type.
    WrongType,
    /// A value, sum or time is NaN or infinite.
    NotFinite,
    /// A reading's time is too old or too far in the future.
    BadTime,
    /// The pack holds more records than the platform accepts.
    TooManyRecords,
    /// A record carries a value the platform does not store (string, data, sum only).
    UnsupportedValue,
    /// The pack holds no record.
    EmptyPack,
    /// A reading's unit differs from the unit of its series, or its value kind (a number, a
    /// boolean) from that of its series.
    UnitMismatch,
    /// A plain pack from a device registered with a key.
    Unsigned,
    /// A signed pack from a device registered without a key.
    UnknownKey,
    /// Not a COSE_Mac0 envelope of the contract's shape.
    BadEnvelope,
    /// The tag does not verify with the device's key, or the key id names another device.
    BadSignature,
    /// The sequence number is not above the last one accepted under the device's key.
    Replayed,
}

impl Reason {
    /// Every reason kind, in the order of the contract's list.
    pub const ALL: [Reason; 21] = [
        Reason::BadTopic,
        Reason::UnknownDevice,
        Reason::TooLarge,
        Reason::Empty,
        Reason::NotSenml,
        Reason::Truncated,
        Reason::InvalidCbor,
        Reason::InvalidRecord,
        Reason::WrongType,
        Reason::NotFinite,
        Reason::BadTime,
        Reason::TooManyRecords,
        Reason::UnsupportedValue,
        Reason::EmptyPack,
        Reason::UnitMismatch,
        Reason::Unsigned,
        Reason::UnknownKey,
        Reason::BadEnvelope,
        Reason::BadSignature,
        Reason::Replayed,
        Reason::InvalidJson,
    ];

    /// The name on the wire, at most [`crate::downlink::MAX_REASON_LEN`] bytes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::BadTopic => "bad_topic",
            Reason::UnknownDevice => "unknown_device",
            Reason::TooLarge => "too_large",
            Reason::Empty => "empty",
            Reason::NotSenml => "not_senml",
            Reason::Truncated => "truncated",
            Reason::InvalidCbor => "invalid_cbor",
            Reason::InvalidRecord => "invalid_record",
            Reason::WrongType => "wrong_type",
            Reason::NotFinite => "not_finite",
            Reason::BadTime => "bad_time",
            Reason::TooManyRecords => "too_many_records",
            Reason::UnsupportedValue => "unsupported_value",
            Reason::EmptyPack => "empty_pack",
            Reason::UnitMismatch => "unit_mismatch",
            Reason::Unsigned => "unsigned",
            Reason::UnknownKey => "unknown_key",
            Reason::BadEnvelope => "bad_envelope",
            Reason::BadSignature => "bad_signature",
            Reason::Replayed => "replayed",
            Reason::InvalidJson => "invalid_json",
        }
    }

    /// The kind of a wire name; `None` for a name this version does not know.
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether the verdict was reached against what the platform has stored (the series'
    /// unit, the device's last sequence number), rather than from the pack alone. The
    /// platform sends such a refusal only once what it was checked against is on disk.
    pub const fn depends_on_stored_data(self) -> bool {
        matches!(self, Reason::UnitMismatch | Reason::Replayed)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::downlink::MAX_REASON_LEN;

    #[test]
    fn names_are_unique_short_and_parse_back() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            let name = reason.as_str();
            assert!(name.len() <= MAX_REASON_LEN, "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            assert_eq!(Reason::parse(name), Some(*reason));
            assert!(Reason::ALL[..i].iter().all(|other| other.as_str() != name), "{name} twice");
        }
        assert_eq!(Reason::parse("store_error"), None);
    }
}
