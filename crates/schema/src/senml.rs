//! SenML packs in CBOR (RFC 8428 section 6): the encoder the nodes use and the decoder the
//! platform uses, with the resolution rules of section 4.6; the JSON form (section 5) is
//! decoded by [`json`] with the same rules, and [`decode`] takes either.
//!
//! A pack is a CBOR array of maps with integer labels. Base fields (`bn`, `bt`, `bu`, `bv`)
//! apply to the record they appear in and every later one, until another record sets them
//! again; so a node that was offline can send its whole backlog in one pack with one base time.
//!
//! Neither side allocates. The decoder ([`cbor`]) hands each resolved [`Record`] to a callback
//! with its strings borrowed from the input, and stops at the first problem with a
//! [`DecodeError`] that says which record and why. It never trusts a length from the input:
//! arrays, maps and strings are read element by element (a header that claims four billion
//! items costs nothing until the input runs out), and nesting is bounded ([`cbor::MAX_DEPTH`]).

use serde::ser::{Serialize, SerializeMap, SerializeSeq};
use serde_cbor::ser::SliceWrite;

use crate::limits::{MAX_FUTURE_SECS, MAX_NAME_LEN, MAX_UNIT_LEN, MIN_TIME_SECS, RELATIVE_TIME_LIMIT, SENML_VERSION};
use crate::reason::Reason;

/// CBOR integer labels of RFC 8428, table 4.
pub mod label {
    /// Base version.
    pub const BVER: i64 = -1;
    /// Base name.
    pub const BN: i64 = -2;
    /// Base time.
    pub const BT: i64 = -3;
    /// Base unit.
    pub const BU: i64 = -4;
    /// Base value.
    pub const BV: i64 = -5;
    /// Base sum.
    pub const BS: i64 = -6;
    /// Name.
    pub const N: i64 = 0;
    /// Unit.
    pub const U: i64 = 1;
    /// Numeric value.
    pub const V: i64 = 2;
    /// String value.
    pub const VS: i64 = 3;
    /// Boolean value.
    pub const VB: i64 = 4;
    /// Sum.
    pub const S: i64 = 5;
    /// Time.
    pub const T: i64 = 6;
    /// Update time.
    pub const UT: i64 = 7;
    /// Data value.
    pub const VD: i64 = 8;
}

/// The value of a resolved record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// `v` (plus any base value).
    Number(f64),
    /// `vs`.
    String(&'a str),
    /// `vb`.
    Bool(bool),
    /// `vd`.
    Data(&'a [u8]),
    /// `vd` of a SenML-JSON pack: the base64url text as sent (checked, not decoded, since
    /// decoding would need a buffer).
    DataText(&'a str),
    /// Only a sum (`s`), no value.
    SumOnly(f64),
}

/// A record after base fields were applied (RFC 8428 section 4.6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a> {
    /// Base name in force for this record (often empty).
    pub base_name: &'a str,
    /// The record's own name; the resolved name is `base_name` followed by `name`.
    pub name: &'a str,
    /// `u`, or the base unit in force.
    pub unit: Option<&'a str>,
    /// The resolved value.
    pub value: Value<'a>,
    /// Absolute time in seconds since the Unix epoch: relative times (below 2^28) were made
    /// absolute against the time of receipt, and a record with no time at all has that time.
    pub time: f64,
}

impl Record<'_> {
    /// Writes the resolved name (base name + name) into `out` and returns it.
    pub fn name_into<'b>(&self, out: &'b mut [u8; MAX_NAME_LEN]) -> &'b str {
        let (b, n) = (self.base_name.as_bytes(), self.name.as_bytes());
        // check_record bounds the sum, and both halves are whole UTF-8 strings.
        let len = (b.len() + n.len()).min(MAX_NAME_LEN);
        let bl = b.len().min(len);
        out[..bl].copy_from_slice(&b[..bl]);
        out[bl..len].copy_from_slice(&n[..len - bl]);
        core::str::from_utf8(&out[..len]).unwrap_or("")
    }

    fn resolved_name_len(&self) -> usize {
        self.base_name.len() + self.name.len()
    }

    fn resolved_name_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.base_name.bytes().chain(self.name.bytes())
    }
}

/// Why one record of a pack is refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// A record is not a CBOR map (a JSON object).
    #[error("record is not a map (a json object)")]
    NotAMap,
    /// A label is neither an integer nor a text string.
    #[error("label is neither an integer nor a text string")]
    BadLabel,
    /// A label appears twice in one record.
    #[error("label {0} appears twice")]
    DuplicateLabel(i64),
    /// A text label ending in `_` (must-understand, RFC 8428 section 4.4) that we do not know.
    #[error("unknown must-understand label")]
    MustUnderstand,
    /// A field has the wrong CBOR type.
    #[error("field {field} must be {expected}, found {found}")]
    WrongType {
        /// The SenML field name.
        field: &'static str,
        /// What the contract asks for.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// Base version newer than RFC 8428's.
    #[error("senml version {0} is not supported (at most 10)")]
    UnsupportedVersion(u64),
    /// The resolved name is empty, too long, or has characters RFC 8428 forbids.
    #[error(
        "name must be 1 to 64 characters of A-Z a-z 0-9 - : . / _, starting with a letter or digit, or an lwm2m path /object/instance/resource"
    )]
    BadName,
    /// The name is well-formed but cannot be filed as a metric (`crate::naming`).
    #[error("{0}")]
    Naming(&'static str),
    /// The unit is too long or not printable ASCII.
    #[error("unit must be 1 to 16 printable ASCII characters")]
    BadUnit,
    /// More than one value field, or none.
    #[error("record must have exactly one value (v, vs, vb or vd) or a base value")]
    NoSingleValue,
    /// A value, sum or time is NaN or infinite.
    #[error("{0} is not a finite number")]
    NotFinite(&'static str),
    /// Time before 2000-01-01.
    #[error("time is before 2000-01-01")]
    TooOld,
    /// Time more than a day ahead of the platform's clock.
    #[error("time is more than a day in the future")]
    InFuture,
    /// The pack holds more records than the receiver accepts.
    #[error("pack has more than {0} records")]
    TooManyRecords(usize),
    /// The receiver refused the record (for example: a value type it does not store).
    #[error("{0}")]
    Refused(&'static str),
}

/// Why a pack cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty payload")]
    Empty,
    /// The top-level item is not an array.
    #[error("not a senml pack: top-level item is {0}, not an array")]
    NotAPack(&'static str),
    /// The input ends inside an item.
    #[error("truncated cbor: the input ends inside an item")]
    Truncated,
    /// Not well-formed CBOR, or nested deeper than [`cbor::MAX_DEPTH`].
    #[error("invalid cbor at byte {at}: {what}")]
    Cbor {
        /// Offset of the offending item.
        at: usize,
        /// What is wrong there.
        what: &'static str,
    },
    /// An indefinite-length text or byte string: records borrow their strings from the input,
    /// so strings must be in one piece.
    #[error("indefinite-length strings are not supported")]
    IndefiniteString,
    /// Bytes follow the pack.
    #[error("trailing bytes after the pack")]
    TrailingData,
    /// A SenML-JSON pack ends inside a value.
    #[error("truncated json")]
    JsonTruncated,
    /// A SenML-JSON pack that is not JSON, or JSON this decoder does not take (escaped
    /// strings, nesting deeper than [`json::MAX_DEPTH`]).
    #[error("invalid json at byte {at}: {what}")]
    Json {
        /// Offset of the offending byte.
        at: usize,
        /// What is wrong there.
        what: &'static str,
    },
    /// One record is refused.
    #[error("record {index}: {error}")]
    Record {
        /// Zero-based index of the record in the pack.
        index: usize,
        /// Why.
        error: RecordError,
    },
}

impl DecodeError {
    /// The contract's reason kind for this error.
    pub fn kind(&self) -> Reason {
        match self {
            Self::Empty => Reason::Empty,
            Self::NotAPack(_) => Reason::NotSenml,
            Self::Truncated | Self::JsonTruncated => Reason::Truncated,
            Self::Cbor { .. } | Self::TrailingData | Self::IndefiniteString => Reason::InvalidCbor,
            Self::Json { .. } => Reason::InvalidJson,
            Self::Record { error, .. } => match error {
                RecordError::NotFinite(_) => Reason::NotFinite,
                RecordError::TooOld | RecordError::InFuture => Reason::BadTime,
                RecordError::TooManyRecords(_) => Reason::TooManyRecords,
                RecordError::Refused(_) => Reason::UnsupportedValue,
                RecordError::WrongType { .. } => Reason::WrongType,
                _ => Reason::InvalidRecord,
            },
        }
    }
}

/// Limits the receiver imposes while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Time of receipt, seconds since the Unix epoch: the origin of relative times and the
    /// reference for the "not more than a day ahead" rule.
    pub now: f64,
    /// The most records one pack may hold.
    pub max_records: usize,
}

/// Decodes a SenML pack in either form, told apart by its first byte: JSON starts with `[`
/// (or whitespace, or `{` for a lone object, refused as not a pack), CBOR with an array head
/// (`0x80` to `0x9f`), and none of those bytes starts a CBOR array. Same records, checks and
/// limits either way.
pub fn decode<'a, F>(input: &'a [u8], opts: DecodeOptions, sink: &mut F) -> Result<usize, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    decode_with_info(input, opts, sink).map(|info| info.records)
}

/// What a decoded pack says besides its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Records in the pack.
    pub records: usize,
    /// The highest downlink version any record says its node reads
    /// ([`crate::downlink::VERSION_LABEL`]); 0 if none says.
    pub downlink: u8,
}

/// [`decode`], and what the pack says besides its records.
pub fn decode_with_info<'a, F>(input: &'a [u8], opts: DecodeOptions, sink: &mut F) -> Result<PackInfo, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    if is_json(input) {
        json::decode_json_pack_with_info(input, opts, sink)
    } else {
        decode_pack_with_info(input, opts, sink)
    }
}

/// How many records a SenML-CBOR pack says it holds: the length of its array, when the
/// array has one. A hint for a caller's capacity, never a promise: nothing past the array's
/// head is read, and a pack may announce more records than it has or than the limits allow.
pub fn records_announced(input: &[u8]) -> Option<u64> {
    if is_json(input) {
        None
    } else {
        cbor::records_announced(input)
    }
}

/// Whether a payload is (meant as) SenML-JSON rather than SenML-CBOR.
pub fn is_json(input: &[u8]) -> bool {
    matches!(input.first(), Some(b'[' | b'{' | b' ' | b'\t' | b'\n' | b'\r'))
}

/// Decodes a SenML-CBOR pack, checks every record against the contract ([`check_record`]) and
/// hands each one, resolved, to `sink`. The sink may refuse a record with an error, which stops
/// decoding. Returns the number of records.
///
/// Records are handed over as they are decoded, so a caller that must accept a pack whole or
/// not at all collects them and acts only when this returns `Ok`.
pub fn decode_pack<'a, F>(input: &'a [u8], opts: DecodeOptions, sink: &mut F) -> Result<usize, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    decode_pack_with_info(input, opts, sink).map(|info| info.records)
}

/// [`decode_pack`], and what the pack says besides its records.
pub fn decode_pack_with_info<'a, F>(input: &'a [u8], opts: DecodeOptions, sink: &mut F) -> Result<PackInfo, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    cbor::decode_pack(input, opts, sink)
}

fn major_type_name(initial: u8) -> &'static str {
    match initial >> 5 {
        0 | 1 => "an integer",
        2 => "a byte string",
        3 => "a text string",
        4 => "an array",
        5 => "a map",
        6 => "a tagged item",
        _ => "a simple value or float",
    }
}

/// Checks a resolved record against the contract: a valid name (or an LwM2M path), a printable unit, exactly one
/// finite value, and a time between 2000-01-01 and one day after `now`.
pub fn check_record(record: &Record<'_>, now: f64) -> Result<(), RecordError> {
    check_name(record)?;
    check_unit(record.unit)?;
    check_value_and_time(record, now)
}

fn check_name(record: &Record<'_>) -> Result<(), RecordError> {
    let len = record.resolved_name_len();
    let mut bytes = record.resolved_name_bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'.' | b'/' | b'_'));
    let lwm2m = || {
        let mut buf = [0u8; MAX_NAME_LEN];
        len <= MAX_NAME_LEN && crate::naming::is_lwm2m_path(record.name_into(&mut buf))
    };
    let plain = first_ok && rest_ok && len <= MAX_NAME_LEN;
    if !plain && !lwm2m() {
        return Err(RecordError::BadName);
    }
    Ok(())
}

fn check_unit(unit: Option<&str>) -> Result<(), RecordError> {
    if let Some(unit) = unit {
        let printable = unit.bytes().all(|b| b.is_ascii_graphic());
        if unit.is_empty() || unit.len() > MAX_UNIT_LEN || !printable {
            return Err(RecordError::BadUnit);
        }
    }
    Ok(())
}

fn check_value_and_time(record: &Record<'_>, now: f64) -> Result<(), RecordError> {
    match record.value {
        Value::Number(v) if !v.is_finite() => return Err(RecordError::NotFinite("value")),
        Value::SumOnly(s) if !s.is_finite() => return Err(RecordError::NotFinite("sum")),
        _ => {}
    }
    if !record.time.is_finite() {
        return Err(RecordError::NotFinite("time"));
    }
    if record.time < MIN_TIME_SECS {
        return Err(RecordError::TooOld);
    }
    if record.time > now + MAX_FUTURE_SECS {
        return Err(RecordError::InFuture);
    }
    Ok(())
}

/// Whether `a` is `b` itself: the same bytes at the same place, so checked alike. The CBOR
/// reader hands out a repeated name or unit at the place it first read it, so a record that
/// repeats the last checked record's skips checking them again.
fn same_place(a: &str, b: &str) -> bool {
    a.len() == b.len() && core::ptr::eq(a.as_ptr(), b.as_ptr())
}

/// Base fields in force while walking a pack.
#[derive(Debug, Default, Clone, Copy)]
struct Bases<'a> {
    name: &'a str,
    time: f64,
    unit: Option<&'a str>,
    value: Option<f64>,
    /// The name of a record that gives none, and the base name before a pack gives one: empty,
    /// and pointing into the pack. A `""` literal points at no memory (a dangling address), and
    /// there glibc's AVX-512 `memcmp` takes a hundred times longer to compare no bytes than at
    /// a real one (`mekong-bench pipeline`'s `str_eq_ns`): every later `==` on such a name,
    /// in a map's lookup or a comparison of two records' names, would pay that.
    empty: &'a str,
    /// The base name, name and unit of the last record that passed [`check_record`].
    checked: Option<(&'a str, &'a str, Option<&'a str>)>,
}

impl<'a> Bases<'a> {
    /// None yet, with the empty name of `input`.
    fn new(input: &'a [u8]) -> Self {
        let empty = input.get(..0).and_then(|b| core::str::from_utf8(b).ok()).unwrap_or("");
        Bases { name: empty, empty, ..Bases::default() }
    }
}

/// One record's fields as found on the wire, before resolution.
#[derive(Debug, Default)]
struct RawRecord<'a> {
    bver: Option<u64>,
    bn: Option<&'a str>,
    bt: Option<f64>,
    bu: Option<&'a str>,
    bv: Option<f64>,
    n: Option<&'a str>,
    u: Option<&'a str>,
    v: Option<f64>,
    vs: Option<&'a str>,
    vb: Option<bool>,
    vd: Option<&'a [u8]>,
    vd_text: Option<&'a str>,
    s: Option<f64>,
    t: Option<f64>,
    /// The downlink version the record's node reads ([`crate::downlink::VERSION_LABEL`]),
    /// 0 if it does not say.
    downlink: u8,
}

impl<'a> RawRecord<'a> {
    fn resolve(&self, bases: &mut Bases<'a>, now: f64) -> Result<Record<'a>, RecordError> {
        if let Some(version) = self.bver {
            if version > SENML_VERSION {
                return Err(RecordError::UnsupportedVersion(version));
            }
        }
        if let Some(bn) = self.bn {
            bases.name = bn;
        }
        if let Some(bt) = self.bt {
            bases.time = bt;
        }
        if let Some(bu) = self.bu {
            bases.unit = Some(bu);
        }
        if let Some(bv) = self.bv {
            bases.value = Some(bv);
        }
        let given = [self.v.is_some(), self.vs.is_some(), self.vb.is_some(), self.vd.is_some(), self.vd_text.is_some()];
        let value = match (given.iter().filter(|g| **g).count(), self) {
            (0, _) => match (bases.value, self.s) {
                (Some(bv), _) => Value::Number(bv),
                (None, Some(s)) => Value::SumOnly(s),
                (None, None) => return Err(RecordError::NoSingleValue),
            },
            // Without a base value, `v` as it is: 0.0 + -0.0 would make it +0.0.
            (1, RawRecord { v: Some(v), .. }) => Value::Number(bases.value.map_or(*v, |bv| bv + v)),
            (1, RawRecord { vs: Some(vs), .. }) => Value::String(vs),
            (1, RawRecord { vb: Some(vb), .. }) => Value::Bool(*vb),
            (1, RawRecord { vd: Some(vd), .. }) => Value::Data(vd),
            (1, RawRecord { vd_text: Some(vd), .. }) => Value::DataText(vd),
            _ => return Err(RecordError::NoSingleValue),
        };
        let mut time = bases.time + self.t.unwrap_or(0.0);
        if time < RELATIVE_TIME_LIMIT {
            time += now;
        }
        let record = Record {
            base_name: bases.name,
            name: self.n.unwrap_or(bases.empty),
            unit: self.u.or(bases.unit),
            value,
            time,
        };
        match bases.checked {
            Some((base_name, name, unit))
                if same_place(base_name, record.base_name)
                    && same_place(name, record.name)
                    && match (unit, record.unit) {
                        (Some(a), Some(b)) => same_place(a, b),
                        (a, b) => a.is_none() && b.is_none(),
                    } =>
            {
                check_value_and_time(&record, now)?
            }
            _ => {
                check_record(&record, now)?;
                bases.checked = Some((record.base_name, record.name, record.unit));
            }
        }
        Ok(record)
    }
}

/// The records of a pack as either form reads them: each checked against the pack's limit,
/// resolved against the base fields so far, and handed to the sink.
struct Records<'a, 's, F> {
    opts: DecodeOptions,
    sink: &'s mut F,
    bases: Bases<'a>,
    /// Records handed over so far, and so the index of the next.
    index: usize,
    downlink: u8,
}

impl<'a, 's, F> Records<'a, 's, F>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    /// Records of the pack `input`.
    fn new(opts: DecodeOptions, sink: &'s mut F, input: &'a [u8]) -> Self {
        Records { opts, sink, bases: Bases::new(input), index: 0, downlink: 0 }
    }

    /// Takes the next record as read, or the reason it was refused while read.
    #[inline(always)]
    fn take(&mut self, raw: Result<&RawRecord<'a>, RecordError>) -> Result<(), DecodeError> {
        let index = self.index;
        let fail = |error| DecodeError::Record { index, error };
        let raw = raw.map_err(fail)?;
        if index >= self.opts.max_records {
            return Err(fail(RecordError::TooManyRecords(self.opts.max_records)));
        }
        let record = raw.resolve(&mut self.bases, self.opts.now).map_err(fail)?;
        self.downlink = self.downlink.max(raw.downlink);
        (self.sink)(record).map_err(fail)?;
        self.index += 1;
        Ok(())
    }

    fn info(&self) -> PackInfo {
        PackInfo { records: self.index, downlink: self.downlink }
    }
}

/// A scalar of a record (a label or a field's value), as far as a record cares: strings
/// borrowed, and any other item (an array, a map, null) only named.
#[derive(Debug)]
enum Item<'a> {
    Int(i128),
    Float(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Bool(bool),
    Other(&'static str),
}

impl Item<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Item::Int(_) => "an integer",
            Item::Float(_) => "a float",
            Item::Text(_) => "a text string",
            Item::Bytes(_) => "a byte string",
            Item::Bool(_) => "a boolean",
            Item::Other(what) => what,
        }
    }
}

/// The bit of a label of RFC 8428 table 4 in a record's set of labels seen, so that a label
/// given twice is refused (base fields included); `None` for an extension label. Inlined:
/// as a call, it was 32 instructions of each record's 817.
#[inline(always)]
fn label_bit(label: i64) -> Option<u16> {
    (label::BS..=label::VD).contains(&label).then(|| 1u16 << (label - label::BS))
}

impl<'a> RawRecord<'a> {
    fn set(&mut self, label: i64, value: Item<'a>) -> Result<(), RecordError> {
        fn number(field: &'static str, item: Item<'_>) -> Result<f64, RecordError> {
            match item {
                // Through i64 where it fits, the same value: an i128's conversion is a call
                // into the compiler's runtime (`__floattidf`), on every integral reading.
                // (A `map_or` converted the i128 first, whatever the branch.)
                Item::Int(i) => Ok(match i64::try_from(i) {
                    Ok(i) => i as f64,
                    Err(_) => i as f64,
                }),
                Item::Float(f) if f.is_finite() => Ok(f),
                Item::Float(_) => Err(RecordError::NotFinite(field)),
                other => Err(wrong(field, "a number", &other)),
            }
        }
        fn text<'a>(field: &'static str, item: Item<'a>) -> Result<&'a str, RecordError> {
            match item {
                Item::Text(t) => Ok(t),
                other => Err(wrong(field, "a text string", &other)),
            }
        }
        fn wrong(field: &'static str, expected: &'static str, found: &Item<'_>) -> RecordError {
            RecordError::WrongType { field, expected, found: found.type_name() }
        }
        match label {
            label::BVER => match value {
                Item::Int(i) if i >= 0 => self.bver = Some(u64::try_from(i).unwrap_or(u64::MAX)),
                other => return Err(wrong("bver", "a positive integer", &other)),
            },
            label::BN => self.bn = Some(text("bn", value)?),
            label::BT => self.bt = Some(number("bt", value)?),
            label::BU => self.bu = Some(text("bu", value)?),
            label::BV => self.bv = Some(number("bv", value)?),
            label::BS => {
                number("bs", value)?;
            }
            label::N => self.n = Some(text("n", value)?),
            label::U => self.u = Some(text("u", value)?),
            label::V => self.v = Some(number("v", value)?),
            label::VS => self.vs = Some(text("vs", value)?),
            label::VB => match value {
                Item::Bool(b) => self.vb = Some(b),
                other => return Err(wrong("vb", "a boolean", &other)),
            },
            label::VD => match value {
                Item::Bytes(b) => self.vd = Some(b),
                other => return Err(wrong("vd", "a byte string", &other)),
            },
            label::S => self.s = Some(number("s", value)?),
            label::T => self.t = Some(number("t", value)?),
            label::UT => {
                number("ut", value)?;
            }
            // Unknown integer labels are extensions we may ignore (RFC 8428 section 4.4).
            _ => {}
        }
        Ok(())
    }
}

/// Base fields, written once in the first record of an encoded pack.
#[derive(Debug, Default, Clone, Copy)]
pub struct Base<'a> {
    /// Base name (`bn`), prefixed to every record's name.
    pub name: Option<&'a str>,
    /// Base time (`bt`), seconds since the Unix epoch; readings' times are relative to it.
    pub time: Option<f64>,
    /// Base unit (`bu`), for readings that give none.
    pub unit: Option<&'a str>,
}

/// One numeric reading to encode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading<'a> {
    /// Record name (`n`): the metric, such as `water_level`.
    pub name: &'a str,
    /// Unit (`u`); left out when it equals the base unit.
    pub unit: Option<&'a str>,
    /// Value (`v`); integral values are written as CBOR integers, which are shorter.
    pub value: f64,
    /// Time (`t`) relative to the base time, in seconds; left out when zero.
    pub time: f64,
}

/// One reading of either kind mekong stores, a number or a boolean, to encode: what the
/// platform forwards ([`encode_entries`], [`json::encode_pack`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry<'a> {
    /// Record name (`n`).
    pub name: &'a str,
    /// Unit (`u`); left out when it equals the base unit.
    pub unit: Option<&'a str>,
    /// Value: [`Value::Number`] (`v`) or [`Value::Bool`] (`vb`); other kinds are refused
    /// with [`EncodeError::Unsupported`].
    pub value: Value<'a>,
    /// Time (`t`) relative to the base time, in seconds; left out when zero.
    pub time: f64,
}

impl<'a> From<&Reading<'a>> for Entry<'a> {
    fn from(r: &Reading<'a>) -> Self {
        Entry { name: r.name, unit: r.unit, value: Value::Number(r.value), time: r.time }
    }
}

/// Why a pack cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is too small for the pack.
    #[error("output buffer too small")]
    BufferFull,
    /// A value or time is NaN or infinite.
    #[error("{0} is not a finite number")]
    NotFinite(&'static str),
    /// A value of a kind the encoder does not write (only numbers and booleans).
    #[error("a {0} value cannot be encoded")]
    Unsupported(&'static str),
}

/// Encodes `readings` as one SenML-CBOR pack into `out` and returns the number of bytes
/// written. Needs no allocator.
pub fn encode_pack(out: &mut [u8], base: &Base<'_>, readings: &[Reading<'_>]) -> Result<usize, EncodeError> {
    encode_with(out, base, readings, Entry::from, None)
}

/// [`encode_pack`], with the first record saying that the node reads downlink version
/// `downlink` ([`crate::downlink::VERSION_LABEL`], after the record's other fields): how a
/// node opts in to lists of acknowledgements.
pub fn encode_pack_with_downlink(
    out: &mut [u8],
    base: &Base<'_>,
    readings: &[Reading<'_>],
    downlink: u8,
) -> Result<usize, EncodeError> {
    encode_with(out, base, readings, Entry::from, Some(downlink))
}

/// Encodes `entries` (numbers and booleans) as one SenML-CBOR pack into `out`, exactly as
/// [`encode_pack`] writes numbers; returns the number of bytes written.
pub fn encode_entries(out: &mut [u8], base: &Base<'_>, entries: &[Entry<'_>]) -> Result<usize, EncodeError> {
    encode_with(out, base, entries, |e| *e, None)
}

/// Checks what every encoder refuses: a time or value that is not finite, a value of a kind
/// that is not written.
fn check_entries<'i, T>(
    base: &Base<'_>,
    items: &'i [T],
    entry: impl Fn(&'i T) -> Entry<'i>,
) -> Result<(), EncodeError> {
    if base.time.is_some_and(|t| !t.is_finite()) {
        return Err(EncodeError::NotFinite("base time"));
    }
    for item in items {
        let e = entry(item);
        match e.value {
            Value::Number(v) if !v.is_finite() => return Err(EncodeError::NotFinite("value")),
            Value::Number(_) | Value::Bool(_) => {}
            Value::String(_) => return Err(EncodeError::Unsupported("string")),
            Value::Data(_) | Value::DataText(_) => return Err(EncodeError::Unsupported("data")),
            Value::SumOnly(_) => return Err(EncodeError::Unsupported("sum")),
        }
        if !e.time.is_finite() {
            return Err(EncodeError::NotFinite("time"));
        }
    }
    Ok(())
}

fn encode_with<'i, T>(
    out: &mut [u8],
    base: &Base<'_>,
    items: &'i [T],
    entry: impl Fn(&'i T) -> Entry<'i> + Copy,
    downlink: Option<u8>,
) -> Result<usize, EncodeError> {
    check_entries(base, items, entry)?;
    let mut ser = serde_cbor::Serializer::new(SliceWrite::new(out));
    PackSer { base, items, entry, downlink }.serialize(&mut ser).map_err(|_| EncodeError::BufferFull)?;
    Ok(ser.into_inner().bytes_written())
}

struct PackSer<'b, 'a, 'r, T, F> {
    base: &'b Base<'a>,
    items: &'r [T],
    entry: F,
    downlink: Option<u8>,
}

impl<'r, T, F: Fn(&'r T) -> Entry<'r> + Copy> Serialize for PackSer<'_, '_, 'r, T, F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for (i, item) in self.items.iter().enumerate() {
            let (base, downlink) = if i == 0 { (Some(self.base), self.downlink) } else { (None, None) };
            let record = RecordSer { base, unit_base: self.base.unit, entry: (self.entry)(item), downlink };
            seq.serialize_element(&record)?;
        }
        seq.end()
    }
}

struct RecordSer<'b, 'a, 'r> {
    base: Option<&'b Base<'a>>,
    unit_base: Option<&'a str>,
    entry: Entry<'r>,
    downlink: Option<u8>,
}

impl Serialize for RecordSer<'_, '_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = &self.entry;
        let base = self.base.copied().unwrap_or_default();
        let unit = r.unit.filter(|u| Some(*u) != self.unit_base);
        let has_time = r.time != 0.0;
        let len = [
            base.name.is_some(),
            base.time.is_some(),
            base.unit.is_some(),
            true,
            unit.is_some(),
            true,
            has_time,
            self.downlink.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        let mut map = s.serialize_map(Some(len))?;
        if let Some(bn) = base.name {
            map.serialize_entry(&label::BN, bn)?;
        }
        if let Some(bt) = base.time {
            map.serialize_entry(&label::BT, &Num(bt))?;
        }
        if let Some(bu) = base.unit {
            map.serialize_entry(&label::BU, bu)?;
        }
        map.serialize_entry(&label::N, r.name)?;
        if let Some(u) = unit {
            map.serialize_entry(&label::U, u)?;
        }
        match r.value {
            Value::Bool(b) => map.serialize_entry(&label::VB, &b)?,
            // Anything else was refused by `check_entries`.
            Value::Number(v) | Value::SumOnly(v) => map.serialize_entry(&label::V, &Num(v))?,
            Value::String(_) | Value::Data(_) | Value::DataText(_) => {}
        }
        if has_time {
            map.serialize_entry(&label::T, &Num(r.time))?;
        }
        if let Some(version) = self.downlink {
            map.serialize_entry(crate::downlink::VERSION_LABEL, &version)?;
        }
        map.end()
    }
}

/// A number written in its shortest exact CBOR form: an integer when it is one, else the
/// narrowest float that holds it exactly (serde_cbor picks between half, single and double).
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const EXACT_INT: f64 = 9_007_199_254_740_992.0; // 2^53
        let v = self.0;
        if v.abs() < EXACT_INT && (v as i64) as f64 == v && !(v == 0.0 && v.is_sign_negative()) {
            s.serialize_i64(v as i64)
        } else {
            s.serialize_f64(v)
        }
    }
}

pub mod cbor;
pub mod json;

#[cfg(test)]
mod tests;
