//! SenML-CBOR packs (RFC 8428 section 6) read by a CBOR reader written for them (RFC 8949):
//! the same records, checks and limits as the JSON reader, and the same callback.
//!
//! Through serde_cbor's visitors a record cost about 160 ns, and decoding was two fifths of
//! the ingest thread at fifty readings a pack (README, "The write log"); a record is a small
//! map of integer labels and scalars, so this reader walks the bytes once and builds the
//! record as it goes.
//!
//! What it takes, and what it refuses:
//! - any well-formed CBOR in the record's fields: integers of every width, half, single and
//!   double floats, tags (read through, as their content), and arrays and maps under labels
//!   the record does not read (skipped);
//! - indefinite-length arrays and maps; but not indefinite-length strings, because a record
//!   borrows its strings from the input, and the pieces of such a string are not contiguous;
//! - no length is trusted: a header that claims four billion items costs nothing until the
//!   input runs out, and a string's length is checked against what is left;
//! - nesting is bounded ([`MAX_DEPTH`], arrays, maps and tags together), so no input
//!   exhausts the stack;
//! - text must be UTF-8, including in items that are skipped, and reserved or unassigned
//!   initial bytes are refused.

use super::{
    label, label_bit, major_type_name, DecodeError, DecodeOptions, Item, PackInfo, RawRecord, Record, RecordError,
    Records,
};

/// How deep arrays, maps and tags may nest, the pack's own array included: as deep as
/// serde_cbor, which read packs before, allowed.
pub const MAX_DEPTH: u8 = 127;

const TOO_DEEP: &str = "recursion limit exceeded (items nested deeper than 127)";

/// [`super::decode_pack_with_info`]'s work.
pub(super) fn decode_pack<'a, F>(input: &'a [u8], opts: DecodeOptions, sink: &mut F) -> Result<PackInfo, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    decode_pack_as(input, opts, sink, true)
}

/// [`super::decode_pack_with_info`] with every record read by the general reader, none by
/// [`Reader::plain_record`]: for the fuzz target that checks that the two read every input
/// alike. Not part of the contract.
#[doc(hidden)]
pub fn decode_pack_general<'a, F>(input: &'a [u8], opts: DecodeOptions, sink: &mut F) -> Result<PackInfo, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    decode_pack_as(input, opts, sink, false)
}

fn decode_pack_as<'a, F>(
    input: &'a [u8],
    opts: DecodeOptions,
    sink: &mut F,
    plain: bool,
) -> Result<PackInfo, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    let first = *input.first().ok_or(DecodeError::Empty)?;
    if first >> 5 != MAJOR_ARRAY {
        return Err(DecodeError::NotAPack(major_type_name(first)));
    }
    let mut r = Reader::new(input);
    let mut left = match r.head()? {
        Head::Array(len) => len,
        _ => return Err(DecodeError::NotAPack(major_type_name(first))),
    };
    r.enter()?;
    let mut records = Records::new(opts, sink, input);
    // One record's fields, filled in place: a record is some two hundred bytes, and moving
    // it out of the reader and back cost a quarter of the decoding.
    let mut raw = RawRecord::default();
    while r.more(&mut left)? {
        let start = r.pos;
        let read = match plain.then(|| r.plain_record(&mut raw)).flatten() {
            Some(()) => Ok(()),
            None => {
                // Read again from its start, so that a refusal is the general reader's.
                r.pos = start;
                r.record(&mut raw)?
            }
        };
        records.take(read.map(|()| &raw))?;
    }
    if r.pos != input.len() {
        return Err(DecodeError::TrailingData);
    }
    Ok(records.info())
}

/// [`super::records_announced`]'s work: the length in the head of the pack's array.
pub(super) fn records_announced(input: &[u8]) -> Option<u64> {
    match Reader::new(input).head() {
        Ok(Head::Array(len)) => len,
        _ => None,
    }
}

// CBOR's major types (RFC 8949 section 3.1), for the COSE reader and writer too.
pub(crate) const MAJOR_UNSIGNED: u8 = 0;
pub(crate) const MAJOR_NEGATIVE: u8 = 1;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;
pub(crate) const MAJOR_TAG: u8 = 6;

/// The head of an item: its major type and argument, read; what follows it, not yet.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Head {
    Unsigned(u64),
    /// The integer -1 - n.
    Negative(u64),
    Bytes(u64),
    Text(u64),
    /// `None`: indefinite length, ended by a break.
    Array(Option<u64>),
    Map(Option<u64>),
    Tag,
    Bool(bool),
    /// `null` or `undefined`.
    Null,
    Float(f64),
    Break,
}

/// A position in the input and the nesting around it. `pos` never passes the input's end.
pub(super) struct Reader<'a> {
    input: &'a [u8],
    pub(super) pos: usize,
    depth: u8,
    /// The last two texts read, newest first (empty until then): a pack's records repeat
    /// their name and unit, and a text equal to one of these is that text, already checked.
    recent: [&'a str; 2],
}

impl<'a> Reader<'a> {
    pub(super) fn new(input: &'a [u8]) -> Self {
        Reader { input, pos: 0, depth: 0, recent: [""; 2] }
    }

    #[inline(always)]
    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n));
        let bytes = end.and_then(|end| self.input.get(self.pos..end)).ok_or(DecodeError::Truncated)?;
        self.pos += bytes.len();
        Ok(bytes)
    }

    #[inline(always)]
    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn invalid(&self, at: usize, what: &'static str) -> DecodeError {
        DecodeError::Cbor { at, what }
    }

    /// Reads the head of the next item (RFC 8949 section 3).
    #[inline(always)]
    fn head(&mut self) -> Result<Head, DecodeError> {
        let at = self.pos;
        let first = self.take_array::<1>()?[0];
        let (major, info) = (first >> 5, first & 0x1f);
        if major == 7 {
            return match info {
                20 => Ok(Head::Bool(false)),
                21 => Ok(Head::Bool(true)),
                22 | 23 => Ok(Head::Null),
                25 => Ok(Head::Float(f16_to_f64(u16::from_be_bytes(self.take_array()?)))),
                26 => Ok(Head::Float(f64::from(f32::from_be_bytes(self.take_array()?)))),
                27 => Ok(Head::Float(f64::from_be_bytes(self.take_array()?))),
                31 => Ok(Head::Break),
                28..=30 => Err(self.invalid(at, "reserved additional information")),
                _ => Err(self.invalid(at, "unassigned simple value")),
            };
        }
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24 => Some(u64::from(self.take_array::<1>()?[0])),
            25 => Some(u64::from(u16::from_be_bytes(self.take_array()?))),
            26 => Some(u64::from(u32::from_be_bytes(self.take_array()?))),
            27 => Some(u64::from_be_bytes(self.take_array()?)),
            31 => None,
            _ => return Err(self.invalid(at, "reserved additional information")),
        };
        match (major, arg) {
            (MAJOR_UNSIGNED, Some(n)) => Ok(Head::Unsigned(n)),
            (MAJOR_NEGATIVE, Some(n)) => Ok(Head::Negative(n)),
            (MAJOR_BYTES, Some(n)) => Ok(Head::Bytes(n)),
            (MAJOR_TEXT, Some(n)) => Ok(Head::Text(n)),
            (MAJOR_BYTES | MAJOR_TEXT, None) => Err(DecodeError::IndefiniteString),
            (MAJOR_ARRAY, len) => Ok(Head::Array(len)),
            (MAJOR_MAP, len) => Ok(Head::Map(len)),
            (MAJOR_TAG, Some(_)) => Ok(Head::Tag),
            _ => Err(self.invalid(at, "indefinite length on an integer or a tag")),
        }
    }

    /// Counts one more level of nesting.
    fn enter(&mut self) -> Result<(), DecodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(DecodeError::Cbor { at: self.pos, what: TOO_DEEP });
        }
        self.depth += 1;
        Ok(())
    }

    /// Whether an array or map holds another element (another pair, for a map); `left` is
    /// what its head announced, counted down, or `None` for an indefinite length, whose break
    /// this reads.
    #[inline(always)]
    fn more(&mut self, left: &mut Option<u64>) -> Result<bool, DecodeError> {
        match left {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => match self.input.get(self.pos) {
                None => Err(DecodeError::Truncated),
                Some(0xff) => {
                    self.pos += 1;
                    Ok(false)
                }
                Some(_) => Ok(true),
            },
        }
    }

    /// The next item, whole: a scalar as it is (strings borrowed), a tag as its content, an
    /// array or map skipped and named. Scalars, nearly every item of a pack, are read here;
    /// nested items out of line, so that this stays small enough to inline.
    #[inline(always)]
    fn item(&mut self) -> Result<Item<'a>, DecodeError> {
        let at = self.pos;
        Ok(match self.head()? {
            Head::Unsigned(n) => Item::Int(i128::from(n)),
            Head::Negative(n) => Item::Int(-1 - i128::from(n)),
            Head::Bytes(len) => Item::Bytes(self.take(len)?),
            Head::Text(len) => Item::Text(self.text(len, at)?),
            Head::Bool(b) => Item::Bool(b),
            Head::Null => Item::Other("null"),
            Head::Float(f) => Item::Float(f),
            nested => self.nested(nested, at)?,
        })
    }

    /// A text string of `len` bytes, checked as UTF-8 unless it repeats a recent one, which
    /// it then is: the same characters at the earlier place in the input. Checking the
    /// load generator's eleven-byte name and two-byte unit cost 166 instructions a record
    /// (callgrind, `mekong-bench pipeline --readings 50`). An empty text is never taken from
    /// `recent`, whose first entries are `""` outside the input (see `Bases::empty`).
    #[inline(always)]
    fn text(&mut self, len: u64, at: usize) -> Result<&'a str, DecodeError> {
        let bytes = self.take(len)?;
        if !bytes.is_empty() {
            for known in self.recent {
                if same_bytes(known.as_bytes(), bytes) {
                    return Ok(known);
                }
            }
        }
        let text = core::str::from_utf8(bytes).map_err(|_| self.invalid(at, "text string is not utf-8"))?;
        self.recent = [text, self.recent[0]];
        Ok(text)
    }

    /// The head, and where it is, of what the tags starting with `head` (at `at`) wrap; `head`
    /// itself if it is no tag. Each tag is a level of nesting, left by the caller.
    fn untagged(&mut self, mut head: Head, mut at: usize) -> Result<(Head, usize), DecodeError> {
        while head == Head::Tag {
            self.enter()?;
            at = self.pos;
            head = self.head()?;
        }
        Ok((head, at))
    }

    /// The rest of an array, map, tag or misplaced break whose head, at `at`, was read: a
    /// tag is its content, an array or a map is skipped.
    #[inline(never)]
    fn nested(&mut self, head: Head, at: usize) -> Result<Item<'a>, DecodeError> {
        let depth = self.depth;
        let (head, at) = self.untagged(head, at)?;
        let item = match head {
            Head::Array(_) => {
                self.skip(head)?;
                Item::Other("an array")
            }
            Head::Map(_) => {
                self.skip(head)?;
                Item::Other("a map")
            }
            Head::Break => return Err(self.invalid(at, "break outside an indefinite-length array or map")),
            // A scalar, read again whole.
            _ => {
                self.pos = at;
                self.item()?
            }
        };
        self.depth = depth;
        Ok(item)
    }

    /// Skips what follows the head of an array or map, everything nested in it included.
    /// Without recursion: the open arrays, maps and tags are counted in a list as deep as
    /// nesting may go, so no input reaches the stack's end, however the code is built.
    fn skip(&mut self, head: Head) -> Result<(), DecodeError> {
        #[derive(Clone, Copy)]
        enum Open {
            /// Items left (a map's pairs count twice).
            Items(u64),
            Array,
            /// An indefinite-length map; `value` when its next item is a value.
            Map {
                value: bool,
            },
        }
        let open = |head: Head| match head {
            Head::Array(Some(n)) => Open::Items(n),
            Head::Map(Some(n)) => Open::Items(n.saturating_mul(2)),
            Head::Array(None) => Open::Array,
            Head::Map(None) => Open::Map { value: false },
            _ => Open::Items(1),
        };
        let too_deep = |at| DecodeError::Cbor { at, what: TOO_DEEP };
        let mut stack = [Open::Items(0); MAX_DEPTH as usize];
        let mut top = 0;
        self.enter()?;
        stack[0] = open(head);
        loop {
            let break_next = self.input.get(self.pos) == Some(&0xff);
            // `enter` bounds the depth, and so `top`, below MAX_DEPTH.
            let frame = stack.get_mut(top).ok_or(too_deep(self.pos))?;
            let ends = match frame {
                Open::Items(0) => true,
                Open::Items(n) => {
                    *n -= 1;
                    false
                }
                Open::Array => break_next,
                Open::Map { value: true } if break_next => {
                    return Err(self.invalid(self.pos, "break in place of a map's value"));
                }
                Open::Map { value } => {
                    *value = !*value;
                    break_next
                }
            };
            if ends {
                if !matches!(frame, Open::Items(_)) {
                    self.pos += 1;
                }
                self.depth -= 1;
                if top == 0 {
                    return Ok(());
                }
                top -= 1;
                continue;
            }
            let at = self.pos;
            let head = self.head()?;
            match head {
                Head::Array(_) | Head::Map(_) | Head::Tag => {
                    self.enter()?;
                    top += 1;
                    *stack.get_mut(top).ok_or(too_deep(at))? = open(head);
                }
                Head::Break => return Err(self.invalid(at, "break outside an indefinite-length array or map")),
                Head::Bytes(len) => {
                    self.take(len)?;
                }
                Head::Text(len) => {
                    self.text(len, at)?;
                }
                Head::Unsigned(_) | Head::Negative(_) | Head::Bool(_) | Head::Null | Head::Float(_) => {}
            }
        }
    }

    /// The next element of the pack into `raw` when it is a record as nodes write them: a map
    /// of fewer than 24 pairs, each an RFC 8428 label (-6 to 8) in one byte and a value of
    /// the label's type in its plain form (no tag, no indefinite length), which the record
    /// then takes; `None` for anything else, valid or not, with `pos` and `raw` left anywhere
    /// in the record, for [`Reader::record`] to read it again whole.
    ///
    /// What it takes, it takes as [`Reader::record`] would, field by field; what it gives up
    /// on, that reads, refusal included. It skips the general reading of an item and the
    /// matching of a label against every field: the load generator's record took 985
    /// instructions that way (callgrind, `mekong-bench pipeline --readings 50`).
    #[inline(always)]
    pub(super) fn plain_record(&mut self, raw: &mut RawRecord<'a>) -> Option<()> {
        let first = *self.input.get(self.pos)?;
        let pairs = first.checked_sub(0xa0).filter(|&n| n < 24)?;
        self.pos += 1;
        *raw = RawRecord::default();
        let mut seen: u16 = 0;
        for _ in 0..pairs {
            let label = match *self.input.get(self.pos)? {
                b @ 0x00..=0x08 => i64::from(b),
                b @ 0x20..=0x25 => -1 - i64::from(b - 0x20),
                _ => return None,
            };
            let bit = label_bit(label)?;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            let at = self.pos + 1;
            let head = *self.input.get(at)?;
            self.pos = at + 1;
            match label {
                label::N => raw.n = Some(self.plain_text(head, at)?),
                label::U => raw.u = Some(self.plain_text(head, at)?),
                label::V => raw.v = Some(self.plain_number(head)?),
                label::T => raw.t = Some(self.plain_number(head)?),
                label::BN => raw.bn = Some(self.plain_text(head, at)?),
                label::BU => raw.bu = Some(self.plain_text(head, at)?),
                label::BT => raw.bt = Some(self.plain_number(head)?),
                label::BV => raw.bv = Some(self.plain_number(head)?),
                label::S => raw.s = Some(self.plain_number(head)?),
                label::VS => raw.vs = Some(self.plain_text(head, at)?),
                label::VB => {
                    raw.vb = Some(match head {
                        0xf4 => false,
                        0xf5 => true,
                        _ => return None,
                    })
                }
                label::UT | label::BS => {
                    self.plain_number(head)?;
                }
                // `bver`, `vd`: seldom sent, and read by the general reader.
                _ => return None,
            }
        }
        Some(())
    }

    /// The text whose head byte `head` (at `at`) was read, when that head gives its length
    /// in itself or in one byte.
    #[inline(always)]
    fn plain_text(&mut self, head: u8, at: usize) -> Option<&'a str> {
        let len = match head {
            0x60..=0x77 => u64::from(head - 0x60),
            0x78 => u64::from(self.take_array::<1>().ok()?[0]),
            _ => return None,
        };
        self.text(len, at).ok()
    }

    /// The number whose head byte `head` was read, as [`RawRecord::set`] takes it: an integer
    /// of at most 64 bits that fits an `i64`, or a finite float.
    #[inline(always)]
    fn plain_number(&mut self, head: u8) -> Option<f64> {
        let unsigned = |n: u64| i64::try_from(n).ok().map(|n| n as f64);
        let negative = |n: u64| i64::try_from(n).ok().map(|n| (-1 - n) as f64);
        let number = match head {
            0x00..=0x17 => f64::from(head),
            0x18 => f64::from(self.take_array::<1>().ok()?[0]),
            0x19 => f64::from(u16::from_be_bytes(self.take_array().ok()?)),
            0x1a => f64::from(u32::from_be_bytes(self.take_array().ok()?)),
            0x1b => unsigned(u64::from_be_bytes(self.take_array().ok()?))?,
            0x20..=0x37 => f64::from(-1 - i32::from(head - 0x20)),
            0x38 => f64::from(-1 - i32::from(self.take_array::<1>().ok()?[0])),
            0x39 => f64::from(-1 - i32::from(u16::from_be_bytes(self.take_array().ok()?))),
            0x3a => (-1 - i64::from(u32::from_be_bytes(self.take_array().ok()?))) as f64,
            0x3b => negative(u64::from_be_bytes(self.take_array().ok()?))?,
            0xf9 => f16_to_f64(u16::from_be_bytes(self.take_array().ok()?)),
            0xfa => f64::from(f32::from_be_bytes(self.take_array().ok()?)),
            0xfb => f64::from_be_bytes(self.take_array().ok()?),
            _ => return None,
        };
        number.is_finite().then_some(number)
    }

    /// The next element of the pack: a record's fields into `raw`, or why the record is
    /// refused. The record is read to its end even after a bad field, so that the reason names
    /// the first bad field and a well-formed pack is read whole.
    pub(super) fn record(&mut self, raw: &mut RawRecord<'a>) -> Result<Result<(), RecordError>, DecodeError> {
        let depth = self.depth;
        let at = self.pos;
        let head = self.head()?;
        // A tagged record is its content, as for any other item.
        let (head, at) = self.untagged(head, at)?;
        let Head::Map(mut left) = head else {
            // Read whole, so that a malformed item is reported as such.
            self.pos = at;
            self.item()?;
            self.depth = depth;
            return Ok(Err(RecordError::NotAMap));
        };
        self.enter()?;
        *raw = RawRecord::default();
        let mut error = None;
        let mut seen: u16 = 0;
        while self.more(&mut left)? {
            // RFC 8428's labels, -6 to 6, are one-byte integers: read here, they skip the
            // general reading of an item. A record of the load generator's pack took 111 ns
            // with it and 89 without (`mekong-bench pipeline`, eight alternated pairs).
            let label = match self.input.get(self.pos) {
                Some(&b @ 0x00..=0x17) => Some(i64::from(b)),
                Some(&b @ 0x20..=0x37) => Some(-1 - i64::from(b - 0x20)),
                _ => None,
            };
            let field = match label {
                Some(label) => {
                    self.pos += 1;
                    let value = self.item()?;
                    raw.labelled(&mut seen, label, value)
                }
                None => {
                    let key = self.item()?;
                    let value = self.item()?;
                    raw.field(&mut seen, key, value)
                }
            };
            if error.is_none() {
                error = field.err();
            }
        }
        self.depth = depth;
        Ok(error.map_or(Ok(()), Err))
    }
}

impl<'a> RawRecord<'a> {
    /// Takes one field of a CBOR record; `seen` holds the labels of RFC 8428 table 4 taken so
    /// far, so that one given twice is refused.
    fn field(&mut self, seen: &mut u16, key: Item<'a>, value: Item<'a>) -> Result<(), RecordError> {
        let label = match key {
            // A label beyond i64 is no label of the table: an extension, ignored below.
            Item::Int(l) => i64::try_from(l).unwrap_or(i64::MAX),
            Item::Text(t) if t.ends_with('_') => return Err(RecordError::MustUnderstand),
            Item::Text(crate::downlink::VERSION_LABEL) => {
                // Not an unsigned integer: ignored, as an older platform ignores it all.
                if let Item::Int(v) = value {
                    self.downlink = u8::try_from(v.max(0)).unwrap_or(u8::MAX);
                }
                return Ok(());
            }
            Item::Text(_) => return Ok(()),
            _ => return Err(RecordError::BadLabel),
        };
        self.labelled(seen, label, value)
    }

    /// [`RawRecord::field`] of an integer label.
    #[inline(always)]
    fn labelled(&mut self, seen: &mut u16, label: i64, value: Item<'a>) -> Result<(), RecordError> {
        if let Some(bit) = label_bit(label) {
            if *seen & bit != 0 {
                return Err(RecordError::DuplicateLabel(label));
            }
            *seen |= bit;
        }
        self.set(label, value)
    }
}

/// A half-precision float (RFC 8949 appendix D).
fn f16_to_f64(half: u16) -> f64 {
    // 2^e, exactly, for the small exponents a half float has (core has no `powi`).
    let pow2 = |e: i32| f64::from_bits(u64::from((e + 1023).unsigned_abs()) << 52);
    let exponent = i32::from((half >> 10) & 0x1f);
    let mantissa = f64::from(half & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * pow2(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mantissa + 1024.0) * pow2(exponent - 25),
    };
    if half & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// `a == b` for the short texts of a pack, in a few loads rather than a call to `memcmp`:
/// through `==`, that call was about 90 of the 200 instructions a record the comparison took.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        // Two overlapping words, compared as such.
        8..=16 => a.first_chunk::<8>() == b.first_chunk::<8>() && a.last_chunk::<8>() == b.last_chunk::<8>(),
        4..=7 => a.first_chunk::<4>() == b.first_chunk::<4>() && a.last_chunk::<4>() == b.last_chunk::<4>(),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}
