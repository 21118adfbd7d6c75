//! SenML packs in JSON (RFC 8428 section 5), decoded by a small reader of its own that
//! resolves records exactly as the CBOR decoder does (same base fields, checks and limits,
//! same callback) and, like it, never allocates.
//!
//! The reader knows JSON's grammar (RFC 8259) and nothing more: a pack is an array of
//! objects whose keys are the labels of RFC 8428 table 4 (`bn`, `bt`, `n`, `v`, ...). Records
//! borrow their strings from the input, so a string with an escape sequence (`\"`, `\u00e9`,
//! even `\/`) is refused with a clear reason rather than copied: no name or unit the contract
//! accepts needs one. A `vd` is base64url text in JSON; it is checked and handed over as
//! [`Value::DataText`], undecoded. Values the records do not read (an extension label holding
//! an object) are skipped, nested at most [`MAX_DEPTH`] deep, so no input exhausts the stack.

use core::fmt::Write as _;

use super::{
    check_entries, label, label_bit, Base, DecodeError, DecodeOptions, EncodeError, Entry, Item, PackInfo, RawRecord,
    Record, RecordError, Records, Value,
};

/// Encodes `entries` as one SenML-JSON pack into `out` (the same records as
/// [`super::encode_entries`] writes in CBOR: base fields in the first record, a unit left out
/// when it is the base unit, a time left out when zero) and returns the number of bytes
/// written. Strings are escaped as RFC 8259 asks; numbers are written in Rust's shortest
/// form that reads back to the same `f64`. Needs no allocator.
pub fn encode_pack(out: &mut [u8], base: &Base<'_>, entries: &[Entry<'_>]) -> Result<usize, EncodeError> {
    check_entries(base, entries, |e| *e)?;
    let mut w = SliceWriter { out, len: 0 };
    w.raw("[")?;
    for (i, e) in entries.iter().enumerate() {
        w.raw(if i == 0 { "{" } else { ",{" })?;
        if i == 0 {
            if let Some(bn) = base.name {
                w.raw("\"bn\":")?;
                w.string(bn)?;
                w.raw(",")?;
            }
            if let Some(bt) = base.time {
                w.raw("\"bt\":")?;
                w.number(bt)?;
                w.raw(",")?;
            }
            if let Some(bu) = base.unit {
                w.raw("\"bu\":")?;
                w.string(bu)?;
                w.raw(",")?;
            }
        }
        w.raw("\"n\":")?;
        w.string(e.name)?;
        if let Some(u) = e.unit.filter(|u| Some(*u) != base.unit) {
            w.raw(",\"u\":")?;
            w.string(u)?;
        }
        match e.value {
            Value::Bool(b) => w.raw(if b { ",\"vb\":true" } else { ",\"vb\":false" })?,
            Value::Number(v) | Value::SumOnly(v) => {
                w.raw(",\"v\":")?;
                w.number(v)?;
            }
            // Refused by `check_entries`.
            Value::String(_) | Value::Data(_) | Value::DataText(_) => {}
        }
        if e.time != 0.0 {
            w.raw(",\"t\":")?;
            w.number(e.time)?;
        }
        w.raw("}")?;
    }
    w.raw("]")?;
    Ok(w.len)
}

/// A writer into a caller's buffer that fails once it is full.
struct SliceWriter<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl SliceWriter<'_> {
    fn raw(&mut self, s: &str) -> Result<(), EncodeError> {
        let end = self.len.checked_add(s.len()).filter(|&e| e <= self.out.len()).ok_or(EncodeError::BufferFull)?;
        self.out[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }

    fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        self.raw("\"")?;
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                c if (c as u32) < 0x20 => "",
                _ => continue,
            };
            self.raw(&s[start..i])?;
            if escape.is_empty() {
                write!(self, "\\u{:04x}", c as u32).map_err(|_| EncodeError::BufferFull)?;
            } else {
                self.raw(escape)?;
            }
            start = i + c.len_utf8();
        }
        self.raw(&s[start..])?;
        self.raw("\"")
    }

    fn number(&mut self, v: f64) -> Result<(), EncodeError> {
        const EXACT_INT: f64 = 9_007_199_254_740_992.0; // 2^53
        let before = self.len;
        // Integers as integers (`42`, not `42.0`); `-0.0` keeps its sign as a float.
        let written = if v.abs() < EXACT_INT && (v as i64) as f64 == v && !(v == 0.0 && v.is_sign_negative()) {
            write!(self, "{}", v as i64)
        } else {
            // `{:?}` is the shortest text that reads back to `v`, in JSON's number grammar
            // for finite values (`0.1`, `-0.0`, `1e300`, `1.5e-7`).
            write!(self, "{v:?}")
        };
        match written {
            Ok(()) => Ok(()),
            Err(_) => {
                self.len = before;
                Err(EncodeError::BufferFull)
            }
        }
    }
}

impl core::fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.raw(s).map_err(|_| core::fmt::Error)
    }
}

/// How deeply arrays and objects may nest inside a record's field.
pub const MAX_DEPTH: usize = 32;

/// Decodes a SenML-JSON pack, checks every record against the contract
/// ([`super::check_record`]) and hands each one, resolved, to `sink`, exactly as
/// [`super::decode_pack`] does for CBOR; returns the number of records.
pub fn decode_json_pack<'a, F>(input: &'a [u8], opts: DecodeOptions, sink: &mut F) -> Result<usize, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    decode_json_pack_with_info(input, opts, sink).map(|info| info.records)
}

/// [`decode_json_pack`], and what the pack says besides its records (the downlink version,
/// `"mekong_dl"`, as in CBOR).
pub fn decode_json_pack_with_info<'a, F>(
    input: &'a [u8],
    opts: DecodeOptions,
    sink: &mut F,
) -> Result<PackInfo, DecodeError>
where
    F: FnMut(Record<'a>) -> Result<(), RecordError>,
{
    let mut r = Reader { input, pos: 0 };
    r.skip_ws();
    match r.peek() {
        None => return Err(DecodeError::Empty),
        Some(b'[') => r.pos += 1,
        Some(b'{') => return Err(DecodeError::NotAPack("an object")),
        Some(b'"') => return Err(DecodeError::NotAPack("a string")),
        Some(_) => return Err(r.syntax("a pack must be a json array")),
    }
    let mut records = Records::new(opts, sink, input);
    r.skip_ws();
    if r.peek() == Some(b']') {
        r.pos += 1;
    } else {
        loop {
            r.skip_ws();
            let raw = match r.peek() {
                Some(b'{') => r.record()?,
                Some(_) => {
                    r.skip_value(0)?;
                    Err(RecordError::NotAMap)
                }
                None => return Err(DecodeError::JsonTruncated),
            };
            records.take(raw.as_ref().map_err(|e| *e))?;
            r.skip_ws();
            match r.next()? {
                b',' => {}
                b']' => break,
                _ => return Err(r.syntax_before("expected , or ] after a record")),
            }
        }
    }
    r.skip_ws();
    if r.pos < input.len() {
        return Err(r.syntax("bytes after the pack"));
    }
    Ok(records.info())
}

/// A position in the input.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

/// A field's value, as far as a record cares; containers are skipped.
enum Scalar<'a> {
    Number { value: f64, int: Option<i64> },
    Text(&'a str),
    Bool(bool),
    Other(&'static str),
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek().ok_or(DecodeError::JsonTruncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn syntax(&self, what: &'static str) -> DecodeError {
        DecodeError::Json { at: self.pos, what }
    }

    /// A syntax error at the byte just read.
    fn syntax_before(&self, what: &'static str) -> DecodeError {
        DecodeError::Json { at: self.pos.saturating_sub(1), what }
    }

    fn expect(&mut self, b: u8, what: &'static str) -> Result<(), DecodeError> {
        if self.next()? == b {
            Ok(())
        } else {
            Err(self.syntax_before(what))
        }
    }

    /// One record: an object. Syntax errors end the pack; a bad field is the record's error,
    /// reported once the object is read to its end, so that it names the first bad field.
    fn record(&mut self) -> Result<Result<RawRecord<'a>, RecordError>, DecodeError> {
        self.pos += 1; // '{'
        let mut raw = RawRecord::default();
        let mut error = None;
        let mut seen: u16 = 0;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Ok(raw));
        }
        loop {
            self.skip_ws();
            let key = self.key()?;
            let value = self.scalar()?;
            if error.is_none() {
                if let Err(e) = set(&mut raw, &mut seen, key, value) {
                    error = Some(e);
                }
            }
            self.skip_ws();
            match self.next()? {
                b',' => {}
                b'}' => break,
                _ => return Err(self.syntax_before("expected , or } in a record")),
            }
        }
        Ok(match error {
            Some(e) => Err(e),
            None => Ok(raw),
        })
    }

    /// A string, borrowed: the opening quote is next.
    fn string(&mut self) -> Result<&'a str, DecodeError> {
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => {
                    return Err(self
                        .syntax_before("escape sequences in strings are not supported (write the character itself)"))
                }
                0..=0x1f => return Err(self.syntax_before("control character in a string")),
                _ => {}
            }
        }
        core::str::from_utf8(&self.input[start..self.pos - 1])
            .map_err(|e| DecodeError::Json { at: start + e.valid_up_to(), what: "string is not utf-8" })
    }

    /// A number: JSON's grammar checked here, then parsed by `core` (no allocation).
    fn number(&mut self) -> Result<Scalar<'a>, DecodeError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return Err(self.syntax_before("invalid number")),
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integral = false;
            self.digits_required()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            integral = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits_required()?;
        }
        let text = core::str::from_utf8(&self.input[start..self.pos]).map_err(|_| self.syntax("invalid number"))?;
        let value: f64 = text.parse().map_err(|_| self.syntax("invalid number"))?;
        let int = if integral { text.parse::<i64>().ok() } else { None };
        Ok(Scalar::Number { value, int })
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn digits_required(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            None => Err(DecodeError::JsonTruncated),
            Some(_) => Err(self.syntax("invalid number")),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), DecodeError> {
        for &b in word {
            if self.next()? != b {
                return Err(self.syntax_before("invalid literal"));
            }
        }
        Ok(())
    }

    /// A field's value; arrays and objects are skipped and reported by their type.
    fn scalar(&mut self) -> Result<Scalar<'a>, DecodeError> {
        match self.peek().ok_or(DecodeError::JsonTruncated)? {
            b'"' => Ok(Scalar::Text(self.string()?)),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true").map(|()| Scalar::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Scalar::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Scalar::Other("null")),
            b'[' => self.skip_value(1).map(|()| Scalar::Other("an array")),
            b'{' => self.skip_value(1).map(|()| Scalar::Other("a map")),
            _ => Err(self.syntax("expected a value")),
        }
    }

    /// An object member's key and its colon, and the blanks after it.
    fn key(&mut self) -> Result<&'a str, DecodeError> {
        if self.peek() != Some(b'"') {
            return Err(match self.peek() {
                None => DecodeError::JsonTruncated,
                Some(_) => self.syntax("expected a string key"),
            });
        }
        let key = self.string()?;
        self.skip_ws();
        self.expect(b':', "expected : after a key")?;
        self.skip_ws();
        Ok(key)
    }

    /// Skips any value, nested `depth` deep already.
    fn skip_value(&mut self, depth: usize) -> Result<(), DecodeError> {
        let (open, close) = match self.peek().ok_or(DecodeError::JsonTruncated)? {
            b'[' => (b'[', b']'),
            b'{' => (b'{', b'}'),
            _ => return self.scalar().map(|_| ()),
        };
        if depth >= MAX_DEPTH {
            return Err(self.syntax("nested too deep"));
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if open == b'{' {
                self.key()?;
            }
            self.skip_value(depth + 1)?;
            self.skip_ws();
            match self.next()? {
                b',' => {}
                b if b == close => return Ok(()),
                _ => return Err(self.syntax_before("expected , or the end of an array or object")),
            }
        }
    }
}

/// The CBOR label of a JSON key (RFC 8428 table 4), for the checks both forms share.
fn label_of(key: &str) -> Option<i64> {
    Some(match key {
        "bver" => label::BVER,
        "bn" => label::BN,
        "bt" => label::BT,
        "bu" => label::BU,
        "bv" => label::BV,
        "bs" => label::BS,
        "n" => label::N,
        "u" => label::U,
        "v" => label::V,
        "vs" => label::VS,
        "vb" => label::VB,
        "s" => label::S,
        "t" => label::T,
        "ut" => label::UT,
        "vd" => label::VD,
        _ => return None,
    })
}

/// Sets one field, with the CBOR decoder's rules: unknown keys are ignored unless they end
/// in `_` (must-understand), a key may appear once.
fn set<'a>(raw: &mut RawRecord<'a>, seen: &mut u16, key: &'a str, value: Scalar<'a>) -> Result<(), RecordError> {
    let Some(label) = label_of(key) else {
        if key == crate::downlink::VERSION_LABEL {
            // Not an unsigned integer: ignored, as an older platform ignores it all.
            if let Scalar::Number { int: Some(v), .. } = value {
                raw.downlink = u8::try_from(v.max(0)).unwrap_or(u8::MAX);
            }
            return Ok(());
        }
        return if key.ends_with('_') { Err(RecordError::MustUnderstand) } else { Ok(()) };
    };
    let bit = label_bit(label).unwrap_or(0);
    if *seen & bit != 0 {
        return Err(RecordError::DuplicateLabel(label));
    }
    *seen |= bit;
    if label == label::VD {
        return match value {
            Scalar::Text(t) if is_base64url(t) => {
                raw.vd_text = Some(t);
                Ok(())
            }
            Scalar::Text(_) => {
                Err(RecordError::WrongType { field: "vd", expected: "base64url text", found: "other text" })
            }
            other => Err(RecordError::WrongType { field: "vd", expected: "base64url text", found: other.type_name() }),
        };
    }
    let item = match value {
        Scalar::Number { int: Some(i), .. } => Item::Int(i.into()),
        Scalar::Number { value, .. } => Item::Float(value),
        Scalar::Text(t) => Item::Text(t),
        Scalar::Bool(b) => Item::Bool(b),
        Scalar::Other(what) => Item::Other(what),
    };
    raw.set(label, item).map_err(|e| match e {
        // JSON has one string type: "a text string" reads as the CBOR name it is.
        RecordError::WrongType { field, expected, found } => {
            RecordError::WrongType { field, expected: json_type(expected), found: json_type(found) }
        }
        other => other,
    })
}

/// JSON's name for a type the CBOR decoder names.
fn json_type(cbor: &'static str) -> &'static str {
    match cbor {
        "a text string" => "a string",
        "an integer" | "a float" => "a number",
        "a map" => "an object",
        other => other,
    }
}

impl Scalar<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Number { .. } => "a number",
            Scalar::Text(_) => "a string",
            Scalar::Bool(_) => "a boolean",
            Scalar::Other(what) => json_type(what),
        }
    }
}

/// Base64url without padding (RFC 4648 section 5), as RFC 8428 section 5 writes `vd`.
fn is_base64url(t: &str) -> bool {
    t.len() % 4 != 1 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests;
