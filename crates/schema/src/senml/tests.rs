//! Tests of the SenML-CBOR codec: round trips, RFC 8428 resolution, the golden pack and every
//! kind of bad input a sensor can send.

use std::string::{String, ToString};
use std::vec::Vec;

use super::*;

const NOW: f64 = 1_790_000_000.0; // 2026-09-21

fn opts() -> DecodeOptions {
    DecodeOptions { now: NOW, max_records: 1000 }
}

#[derive(Debug, PartialEq)]
struct Owned {
    name: String,
    unit: Option<String>,
    value: f64,
    time: f64,
}

fn decode(input: &[u8]) -> Result<Vec<Owned>, DecodeError> {
    let mut out = Vec::new();
    decode_pack(input, opts(), &mut |r: Record<'_>| {
        let mut buf = [0u8; MAX_NAME_LEN];
        let value = match r.value {
            Value::Number(v) => v,
            _ => return Err(RecordError::Refused("only numbers")),
        };
        out.push(Owned { name: r.name_into(&mut buf).to_string(), unit: r.unit.map(Into::into), value, time: r.time });
        Ok(())
    })?;
    Ok(out)
}

fn owned(name: &str, unit: Option<&str>, value: f64, time: f64) -> Owned {
    Owned { name: name.into(), unit: unit.map(Into::into), value, time }
}

/// A minimal CBOR writer for building inputs by hand, including ones the encoder never makes.
#[derive(Default)]
struct Cbor(Vec<u8>);

impl Cbor {
    fn head(mut self, major: u8, n: u64) -> Self {
        let m = major << 5;
        match n {
            0..=23 => self.0.push(m | n as u8),
            24..=0xff => self.0.extend([m | 24, n as u8]),
            0x100..=0xffff => {
                self.0.push(m | 25);
                self.0.extend((n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.0.push(m | 26);
                self.0.extend((n as u32).to_be_bytes());
            }
            _ => {
                self.0.push(m | 27);
                self.0.extend(n.to_be_bytes());
            }
        }
        self
    }
    fn arr(self, n: u64) -> Self {
        self.head(4, n)
    }
    fn map(self, n: u64) -> Self {
        self.head(5, n)
    }
    fn int(self, i: i64) -> Self {
        if i >= 0 {
            self.head(0, i as u64)
        } else {
            self.head(1, (-1 - i) as u64)
        }
    }
    fn text(self, s: &str) -> Self {
        let mut c = self.head(3, s.len() as u64);
        c.0.extend(s.as_bytes());
        c
    }
    fn f64(mut self, x: f64) -> Self {
        self.0.push(0xfb);
        self.0.extend(x.to_bits().to_be_bytes());
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend(bytes);
        self
    }
    fn done(self) -> Vec<u8> {
        self.0
    }
}

fn record_error(input: &[u8]) -> (usize, RecordError) {
    match decode(input) {
        Err(DecodeError::Record { index, error }) => (index, error),
        other => panic!("expected a record error, got {other:?}"),
    }
}

#[test]
fn encoded_packs_decode_to_the_same_readings() {
    let base = Base { name: None, time: Some(1_790_000_000.0), unit: Some("cm") };
    let readings = [
        Reading { name: "water_level", unit: None, value: 182.4, time: 0.0 },
        Reading { name: "water_level", unit: None, value: 183.0, time: 10.0 },
        Reading { name: "salinity", unit: Some("ppt"), value: 0.35, time: 10.5 },
        Reading { name: "water_temp", unit: Some("Cel"), value: -0.0, time: -60.25 },
    ];
    let mut buf = [0u8; 256];
    let n = encode_pack(&mut buf, &base, &readings).unwrap();
    let got = decode(&buf[..n]).unwrap();
    assert_eq!(
        got,
        [
            owned("water_level", Some("cm"), 182.4, 1_790_000_000.0),
            owned("water_level", Some("cm"), 183.0, 1_790_000_010.0),
            owned("salinity", Some("ppt"), 0.35, 1_790_000_010.5),
            owned("water_temp", Some("Cel"), -0.0, 1_789_999_939.75),
        ]
    );
}

#[test]
fn encoding_fails_cleanly_when_the_buffer_is_short() {
    let r = [Reading { name: "pm2_5", unit: Some("ug/m3"), value: 12.5, time: 0.0 }];
    let mut buf = [0u8; 8];
    assert_eq!(encode_pack(&mut buf, &Base::default(), &r), Err(EncodeError::BufferFull));
    let nan = [Reading { value: f64::NAN, ..r[0] }];
    assert_eq!(encode_pack(&mut [0u8; 64], &Base::default(), &nan), Err(EncodeError::NotFinite("value")));
}

#[test]
fn integral_values_are_written_as_integers() {
    let r = [Reading { name: "vehicle_count", unit: None, value: 42.0, time: 0.0 }];
    let mut buf = [0u8; 64];
    let n = encode_pack(&mut buf, &Base::default(), &r).unwrap();
    // [ {0: "vehicle_count", 2: 42} ]
    let expected = Cbor::default().arr(1).map(2).int(0).text("vehicle_count").int(2).int(42).done();
    assert_eq!(&buf[..n], expected.as_slice());
}

/// The pack shown in the README: anyone can paste its hex into a CBOR decoder.
#[test]
fn golden_pack_matches_the_fixture() {
    let base = Base { name: None, time: Some(1_790_000_000.0), unit: Some("cm") };
    let readings = [
        Reading { name: "water_level", unit: Some("cm"), value: 182.5, time: 0.0 },
        Reading { name: "salinity", unit: Some("ppt"), value: 0.25, time: 0.0 },
        Reading { name: "water_level", unit: Some("cm"), value: 184.0, time: 60.0 },
    ];
    let mut buf = [0u8; 256];
    let n = encode_pack(&mut buf, &base, &readings).unwrap();
    let hex: String = buf[..n].iter().map(|b| std::format!("{b:02x}")).collect();
    let fixture = include_str!("../../fixtures/water-pack.hex").trim();
    assert_eq!(hex, fixture);
    let got = decode(&buf[..n]).unwrap();
    assert_eq!(got[2], owned("water_level", Some("cm"), 184.0, 1_790_000_060.0));
}

#[test]
fn base_fields_apply_until_changed() {
    // RFC 8428 section 4.6: each base field holds for later records until set again.
    let input = Cbor::default()
        .arr(3)
        .map(4)
        .int(label::BN)
        .text("a-")
        .int(label::BT)
        .int(1_790_000_000)
        .int(label::N)
        .text("x")
        .int(label::V)
        .int(1)
        .map(3)
        .int(label::BV)
        .int(100)
        .int(label::N)
        .text("y")
        .int(label::V)
        .f64(0.5)
        .map(3)
        .int(label::BN)
        .text("")
        .int(label::N)
        .text("z")
        .int(label::T)
        .int(-5)
        .done();
    let got = decode(&input).unwrap();
    assert_eq!(
        got,
        [
            owned("a-x", None, 1.0, 1_790_000_000.0),
            owned("a-y", None, 100.5, 1_790_000_000.0),
            // no value field: the base value is the value
            owned("z", None, 100.0, 1_789_999_995.0),
        ]
    );
}

#[test]
fn a_negative_zero_keeps_its_sign_without_a_base_value() {
    // 0.0 + -0.0 is +0.0: adding an absent base value would lose the sign.
    let input = Cbor::default().arr(1).map(2).int(label::N).text("x").int(label::V).f64(-0.0).done();
    assert_eq!(decode(&input).unwrap()[0].value.to_bits(), (-0.0f64).to_bits());
}

#[test]
fn times_below_2_pow_28_are_relative_to_receipt() {
    let no_time = Cbor::default().arr(1).map(2).int(label::N).text("pm10").int(label::V).int(30).done();
    assert_eq!(decode(&no_time).unwrap()[0].time, NOW);
    let relative =
        Cbor::default().arr(1).map(3).int(label::N).text("pm10").int(label::V).int(30).int(label::T).int(-120).done();
    assert_eq!(decode(&relative).unwrap()[0].time, NOW - 120.0);
    let fractional = Cbor::default()
        .arr(1)
        .map(3)
        .int(label::N)
        .text("pm10")
        .int(label::V)
        .int(30)
        .int(label::T)
        .f64(1_790_000_000.123)
        .done();
    assert!((decode(&fractional).unwrap()[0].time - 1_790_000_000.123).abs() < 1e-6);
}

#[test]
fn unknown_integer_and_text_labels_are_ignored() {
    let input = Cbor::default()
        .arr(1)
        .map(4)
        .int(label::N)
        .text("ph")
        .int(label::V)
        .f64(7.25)
        .int(23)
        .arr(2)
        .int(1)
        .int(2)
        .text("note")
        .text("x")
        .done();
    assert_eq!(decode(&input).unwrap(), [owned("ph", None, 7.25, NOW)]);
}

#[test]
fn empty_and_non_pack_payloads_are_refused() {
    assert!(matches!(decode(&[]), Err(DecodeError::Empty)));
    assert!(matches!(decode(&Cbor::default().map(0).done()), Err(DecodeError::NotAPack("a map"))));
    assert!(matches!(decode(b"{\"v\":1}"), Err(DecodeError::NotAPack(_))));
    assert!(matches!(decode(&Cbor::default().text("hello").done()), Err(DecodeError::NotAPack("a text string"))));
}

#[test]
fn truncated_packs_are_refused() {
    let full = Cbor::default().arr(1).map(2).int(label::N).text("pm2_5").int(label::V).f64(12.5).done();
    for cut in 1..full.len() {
        let err = decode(&full[..cut]).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated), "cut at {cut}: {err:?}");
        assert_eq!(err.kind(), crate::Reason::Truncated);
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let input = Cbor::default().arr(0).int(1).done();
    assert!(matches!(decode(&input), Err(DecodeError::TrailingData)));
}

#[test]
fn records_that_are_not_maps_are_refused() {
    let input = Cbor::default().arr(2).map(2).int(label::N).text("a").int(label::V).int(1).int(7).done();
    assert_eq!(record_error(&input), (1, RecordError::NotAMap));
}

#[test]
fn wrong_types_are_refused_with_the_field() {
    let input = Cbor::default().arr(1).map(2).int(label::N).text("speed").int(label::V).text("fast").done();
    assert_eq!(
        record_error(&input),
        (0, RecordError::WrongType { field: "v", expected: "a number", found: "a text string" })
    );
    let input = Cbor::default().arr(1).map(2).int(label::N).int(5).int(label::V).int(1).done();
    assert_eq!(
        record_error(&input),
        (0, RecordError::WrongType { field: "n", expected: "a text string", found: "an integer" })
    );
    let input = Cbor::default().arr(1).map(2).int(label::N).text("x").int(label::T).arr(0).done();
    assert!(matches!(record_error(&input).1, RecordError::WrongType { field: "t", .. }));
}

#[test]
fn nan_and_infinite_numbers_are_refused() {
    for (x, label, field) in
        [(f64::NAN, label::V, "v"), (f64::INFINITY, label::V, "v"), (f64::NEG_INFINITY, label::T, "t")]
    {
        let input = Cbor::default().arr(1).map(3).int(label::N).text("x").int(label::V).int(1).int(label).f64(x).done();
        // A duplicate v is reported before its value is judged; use a fresh label set for v.
        let input = if label == label::V {
            Cbor::default().arr(1).map(2).int(label::N).text("x").int(label::V).f64(x).done()
        } else {
            input
        };
        assert_eq!(record_error(&input), (0, RecordError::NotFinite(field)));
    }
    // Half-precision NaN (f9 7e00), as some encoders write it.
    let input = Cbor::default().arr(1).map(2).int(label::N).text("x").int(label::V).raw(&[0xf9, 0x7e, 0x00]).done();
    assert_eq!(record_error(&input), (0, RecordError::NotFinite("v")));
}

#[test]
fn times_outside_the_window_are_refused() {
    let at =
        |t: f64| Cbor::default().arr(1).map(3).int(label::N).text("x").int(label::V).int(1).int(label::T).f64(t).done();
    assert_eq!(record_error(&at(946_684_799.0)), (0, RecordError::TooOld));
    assert_eq!(record_error(&at(NOW + 86_401.0)), (0, RecordError::InFuture));
    assert!(decode(&at(NOW + 86_399.0)).is_ok());
    assert!(decode(&at(946_684_800.0)).is_ok());
}

#[test]
fn huge_length_headers_cost_nothing() {
    // An array header that claims 2^32 - 1 records, then one record and the end of input.
    let input = Cbor::default().arr(0xffff_ffff).map(2).int(label::N).text("x").int(label::V).int(1).done();
    assert!(matches!(decode(&input), Err(DecodeError::Truncated)));
    // A text string header that claims 2^63 bytes.
    let input = Cbor::default().arr(1).map(1).int(label::N).head(3, 1 << 63).done();
    assert!(matches!(decode(&input), Err(DecodeError::Truncated | DecodeError::Cbor { .. })));
    // A map header that claims 2^64 - 1 pairs.
    let input = Cbor::default().arr(1).map(u64::MAX).done();
    assert!(matches!(decode(&input), Err(DecodeError::Truncated)));
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    let mut input = Cbor::default().arr(1).map(2).int(label::N).text("x").int(99).done();
    input.extend(std::iter::repeat_n(0x81, 100_000)); // [[[[...
    input.push(0x00);
    let err = decode(&input).unwrap_err();
    assert!(matches!(err, DecodeError::Cbor { .. }), "{err:?}");
    assert!(err.to_string().contains("recursion limit"), "{err}");
}

#[test]
fn skipped_items_nest_to_the_limit_and_no_further() {
    // Depth counts the pack's array, the record's map and each array inside the value.
    let nested = |arrays: usize| {
        let mut input = Cbor::default().arr(1).map(3).int(label::N).text("x").int(label::V).int(1).int(99).done();
        input.extend(std::iter::repeat_n(0x81, arrays));
        input.push(0x00);
        input
    };
    assert_eq!(decode(&nested(MAX_DEPTH_FOR_TESTS - 2)).unwrap(), [owned("x", None, 1.0, NOW)]);
    let err = decode(&nested(MAX_DEPTH_FOR_TESTS - 1)).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    // Maps and tags count as arrays do.
    let mut input = Cbor::default().arr(1).map(3).int(label::N).text("x").int(label::V).int(1).int(99).done();
    for i in 0..200 {
        input.extend(if i % 2 == 0 { [0xa1, 0x00] } else { [0xc1, 0x81] }); // {0: 1([...
    }
    input.push(0x00);
    assert!(decode(&input).unwrap_err().to_string().contains("recursion limit"));
}

const MAX_DEPTH_FOR_TESTS: usize = cbor::MAX_DEPTH as usize;

#[test]
fn indefinite_lengths_and_tags_read_as_their_definite_forms() {
    let definite = Cbor::default().arr(2).map(3).int(label::N).text("x").int(label::V).int(1).int(99);
    let definite = definite.arr(2).text("a").map(1).int(1).int(2).map(2).int(label::N).text("y").int(label::V).int(2);
    let indefinite = Cbor::default()
        .raw(&[0x9f, 0xbf]) // [_ {_
        .int(label::N)
        .text("x")
        .int(label::V)
        .int(1)
        .int(99)
        .raw(&[0x9f])
        .text("a")
        .raw(&[0xbf])
        .int(1)
        .int(2)
        .raw(&[0xff, 0xff, 0xff]) // } ] }
        .raw(&[0xc6]) // a tagged record is its content
        .map(2)
        .int(label::N)
        .raw(&[0xd8, 0x20]) // and so is a tagged field
        .text("y")
        .int(label::V)
        .int(2)
        .raw(&[0xff]);
    let expected = [owned("x", None, 1.0, NOW), owned("y", None, 2.0, NOW)];
    assert_eq!(decode(&definite.done()).unwrap(), expected);
    assert_eq!(decode(&indefinite.done()).unwrap(), expected);
}

/// The reader takes a one-byte label without reading an item; a label in a longer form (an
/// encoder need not write the shortest) or tagged goes the general way, to the same record
/// and the same refusals.
#[test]
fn labels_in_every_form_read_as_their_one_byte_form() {
    // `long(l)`: the label in the two-byte form of its major type, or tagged.
    let long = |c: Cbor, l: i64| match l {
        0.. => c.raw(&[0x18, l as u8]),
        _ => c.raw(&[0x38, (-1 - l) as u8]),
    };
    let tagged = |c: Cbor, l: i64| c.raw(&[0xc6]).int(l);
    let short = |c: Cbor, l: i64| c.int(l);
    let pack = |label: &dyn Fn(Cbor, i64) -> Cbor| {
        let c = label(Cbor::default().arr(2).map(4), label::BN).text("hau-01:");
        let c = label(label(label(c, label::N).text("level"), label::U).text("cm"), label::V).f64(1.5);
        let c = label(label(c.map(3), label::N).text("flow"), label::V).int(-7);
        label(c, label::T).int(-60).done()
    };
    let expected = [owned("hau-01:level", Some("cm"), 1.5, NOW), owned("hau-01:flow", None, -7.0, NOW - 60.0)];
    for (form, label) in [("short", &short as &dyn Fn(Cbor, i64) -> Cbor), ("long", &long), ("tagged", &tagged)] {
        assert_eq!(decode(&pack(label)).unwrap(), expected, "{form}");
        let twice = label(label(Cbor::default().arr(1).map(2), label::V).int(1), label::V).int(2).done();
        assert_eq!(record_error(&twice), (0, RecordError::DuplicateLabel(label::V)), "{form}");
    }
    // The same label once short and once long is given twice all the same.
    let mixed = long(Cbor::default().arr(1).map(2).int(label::V).int(1), label::V).int(2).done();
    assert_eq!(record_error(&mixed), (0, RecordError::DuplicateLabel(label::V)));
}

#[test]
fn floats_of_every_width_are_read_exactly() {
    // Half-precision 1.5, a subnormal half, -0.0 as a half, single 0.1, double 0.1.
    for (bytes, value) in [
        (&[0xf9, 0x3e, 0x00][..], 1.5),
        (&[0xf9, 0x00, 0x01][..], 2f64.powi(-24)),
        (&[0xf9, 0x7b, 0xff][..], 65504.0),
        (&[0xfa, 0x3d, 0xcc, 0xcc, 0xcd][..], f64::from(0.1f32)),
        (&[0xfb, 0x3f, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a][..], 0.1),
    ] {
        let input = Cbor::default().arr(1).map(2).int(label::N).text("x").int(label::V).raw(bytes).done();
        assert_eq!(decode(&input).unwrap()[0].value.to_bits(), value.to_bits(), "{bytes:02x?}");
    }
    let input = Cbor::default().arr(1).map(2).int(label::N).text("x").int(label::V).raw(&[0xf9, 0x80, 0x00]).done();
    assert!(decode(&input).unwrap()[0].value.is_sign_negative());
    let input = Cbor::default().arr(1).map(2).int(label::N).text("x").int(label::V).raw(&[0xf9, 0x7c, 0x00]).done();
    assert_eq!(record_error(&input), (0, RecordError::NotFinite("v")));
    // Integers of every width, and the negative ones past i64 that only a float holds.
    for (bytes, value) in [
        (&[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], u64::MAX as f64),
        (&[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], -18_446_744_073_709_551_616.0),
        (&[0x39, 0x01, 0x00][..], -257.0),
    ] {
        let input = Cbor::default().arr(1).map(2).int(label::N).text("x").int(label::V).raw(bytes).done();
        assert_eq!(decode(&input).unwrap()[0].value, value, "{bytes:02x?}");
    }
}

#[test]
fn malformed_cbor_is_refused_where_it_is() {
    let with_value = |bytes: &[u8]| {
        Cbor::default().arr(1).map(3).int(label::N).text("x").int(label::V).int(1).int(99).raw(bytes).done()
    };
    for (bytes, what) in [
        (&[0xff][..], "break outside"),
        (&[0xf8, 0x20][..], "unassigned simple value"),
        (&[0xe0][..], "unassigned simple value"),
        (&[0x1c][..], "reserved"),
        (&[0x3f][..], "indefinite length on an integer"),
        (&[0x62, 0xc3, 0x28][..], "not utf-8"),
        (&[0x81, 0x61, 0xff][..], "not utf-8"), // inside an item that is only skipped
        (&[0xbf, 0x00, 0xff][..], "break in place of a map's value"),
    ] {
        let input = with_value(bytes);
        match decode(&input) {
            Err(err @ DecodeError::Cbor { at, .. }) => {
                assert!(err.to_string().contains(what), "{bytes:02x?}: {err}");
                // The value starts at byte 9.
                assert!(at >= 9 && at < input.len(), "{bytes:02x?}: at {at}");
                assert_eq!(err.kind(), crate::Reason::InvalidCbor);
            }
            other => panic!("{bytes:02x?}: {other:?}"),
        }
    }
    // A break in place of a record, and in place of a key of a definite map.
    assert!(matches!(decode(&Cbor::default().arr(1).raw(&[0xff]).done()), Err(DecodeError::Cbor { at: 1, .. })));
    assert!(matches!(decode(&Cbor::default().arr(1).map(1).raw(&[0xff]).done()), Err(DecodeError::Cbor { .. })));
}

#[test]
fn too_many_records_are_refused() {
    let mut c = Cbor::default().arr(1001);
    for _ in 0..1001 {
        c = c.map(2).int(label::N).text("x").int(label::V).int(1);
    }
    assert_eq!(record_error(&c.done()), (1000, RecordError::TooManyRecords(1000)));
}

#[test]
fn malformed_records_are_refused_with_reasons() {
    fn check(c: Cbor, expected: RecordError) {
        assert_eq!(record_error(&c.done()).1, expected);
    }
    let one = || Cbor::default().arr(1);
    check(one().map(2).int(label::N).text("x").int(label::N).text("y"), RecordError::DuplicateLabel(0));
    check(one().map(2).int(label::N).text("x").text("crit_").int(1), RecordError::MustUnderstand);
    // base fields too (RFC 8428 section 4.4: a field appears at most once in a record)
    check(
        one().map(3).int(label::BN).text("a").int(label::BN).text("b").int(label::V).int(1),
        RecordError::DuplicateLabel(label::BN),
    );
    // a leading '/' only for an LwM2M path
    check(one().map(2).int(label::N).text("/3303/0").int(label::V).int(1), RecordError::BadName);
    check(one().map(2).int(label::N).text("x").f64(1.0).int(1), RecordError::BadLabel);
    check(one().map(1).int(label::N).text("x"), RecordError::NoSingleValue);
    check(
        one().map(3).int(label::N).text("x").int(label::V).int(1).int(label::VB).raw(&[0xf5]),
        RecordError::NoSingleValue,
    );
    check(one().map(2).int(label::N).text("_x").int(label::V).int(1), RecordError::BadName);
    check(one().map(2).int(label::N).text("a b").int(label::V).int(1), RecordError::BadName);
    check(one().map(1).int(label::V).int(1), RecordError::BadName);
    check(one().map(2).int(label::N).text(&"a".repeat(65)).int(label::V).int(1), RecordError::BadName);
    check(one().map(3).int(label::N).text("x").int(label::U).text("").int(label::V).int(1), RecordError::BadUnit);
    check(
        one().map(3).int(label::BVER).int(11).int(label::N).text("x").int(label::V).int(1),
        RecordError::UnsupportedVersion(11),
    );
}

#[test]
fn indefinite_length_strings_are_refused() {
    let input = Cbor::default().arr(1).map(2).int(label::N).raw(&[0x7f, 0x61, b'a', 0xff]).int(label::V).int(1).done();
    assert!(matches!(decode(&input), Err(DecodeError::IndefiniteString)));
}

#[test]
fn non_numeric_values_reach_the_sink_which_may_refuse_them() {
    let input = Cbor::default().arr(1).map(2).int(label::N).text("door").int(label::VB).raw(&[0xf5]).done();
    assert_eq!(record_error(&input), (0, RecordError::Refused("only numbers")));
    assert_eq!(decode(&input).unwrap_err().kind(), crate::Reason::UnsupportedValue);
}

#[test]
fn entries_of_numbers_and_booleans_decode_back_from_cbor_and_json() {
    let base = Base { name: Some("urn:dev:mekong:pump-7:"), time: Some(1_790_000_000.5), unit: None };
    let entries = [
        Entry { name: "water_level", unit: Some("cm"), value: Value::Number(182.4), time: 0.0 },
        Entry { name: "pump_on", unit: None, value: Value::Bool(true), time: 10.0 },
        Entry { name: "pump_on", unit: None, value: Value::Bool(false), time: 20.25 },
        Entry { name: "count", unit: Some("1/min"), value: Value::Number(-0.0), time: -1.0 },
        Entry { name: "tiny", unit: None, value: Value::Number(1.5e-7), time: 0.0 },
    ];
    let mut cbor = [0u8; 512];
    let n = encode_entries(&mut cbor, &base, &entries).unwrap();
    let mut json = [0u8; 512];
    let m = json::encode_pack(&mut json, &base, &entries).unwrap();
    let text = core::str::from_utf8(&json[..m]).unwrap();
    assert_eq!(
        text,
        r#"[{"bn":"urn:dev:mekong:pump-7:","bt":1790000000.5,"n":"water_level","u":"cm","v":182.4},{"n":"pump_on","vb":true,"t":10},{"n":"pump_on","vb":false,"t":20.25},{"n":"count","u":"1/min","v":-0.0,"t":-1},{"n":"tiny","v":1.5e-7}]"#
    );
    for bytes in [&cbor[..n], &json[..m]] {
        let mut got = Vec::new();
        crate::senml::decode(bytes, DecodeOptions { now: 1_790_000_100.0, max_records: 16 }, &mut |r: Record<'_>| {
            let mut buf = [0u8; MAX_NAME_LEN];
            got.push((r.name_into(&mut buf).to_string(), r.unit.map(String::from), r.value, r.time));
            Ok(())
        })
        .unwrap();
        let name = |n: &str| std::format!("urn:dev:mekong:pump-7:{n}");
        assert_eq!(
            got,
            [
                (name("water_level"), Some("cm".into()), Value::Number(182.4), 1_790_000_000.5),
                (name("pump_on"), None, Value::Bool(true), 1_790_000_010.5),
                (name("pump_on"), None, Value::Bool(false), 1_790_000_020.75),
                (name("count"), Some("1/min".into()), Value::Number(-0.0), 1_789_999_999.5),
                (name("tiny"), None, Value::Number(1.5e-7), 1_790_000_000.5),
            ]
        );
    }
    let mut escaped = [0u8; 64];
    let quoted = [Entry { name: "a\"b\\c\u{1}", unit: None, value: Value::Bool(true), time: 0.0 }];
    let k = json::encode_pack(&mut escaped, &Base::default(), &quoted).unwrap();
    assert_eq!(&escaped[..k], br#"[{"n":"a\"b\\c\u0001","vb":true}]"#);
    let strings = [Entry { value: Value::String("x"), ..entries[0] }];
    assert_eq!(encode_entries(&mut cbor, &base, &strings), Err(EncodeError::Unsupported("string")));
    assert_eq!(json::encode_pack(&mut [0u8; 8], &base, &entries), Err(EncodeError::BufferFull));
    assert_eq!(encode_entries(&mut [0u8; 8], &base, &entries), Err(EncodeError::BufferFull));
}

/// The downlink version a pack says its node reads (`"mekong_dl"`, a text label): in CBOR
/// and JSON, from any record, the highest wins; without it 0; a value that is not an
/// unsigned integer is ignored, and the records are the same with or without it.
#[test]
fn a_pack_says_which_downlink_version_its_node_reads() {
    let info = |input: &[u8]| decode_with_info(input, opts(), &mut |_| Ok(())).unwrap();
    let base = Base { time: Some(1_790_000_000.0), unit: Some("cm"), ..Base::default() };
    let readings = [
        Reading { name: "water_level", unit: None, value: 182.5, time: 0.0 },
        Reading { name: "water_level", unit: None, value: 183.0, time: 60.0 },
    ];
    let (mut plain, mut opted) = ([0u8; 128], [0u8; 128]);
    let n = encode_pack(&mut plain, &base, &readings).unwrap();
    let m = encode_pack_with_downlink(&mut opted, &base, &readings, crate::downlink::VERSION_LIST).unwrap();
    // `"mekong_dl": 2`: a text key of 9 bytes (1 + 9) and its value (1).
    assert_eq!(m, n + 11);
    assert_eq!(info(&plain[..n]), PackInfo { records: 2, downlink: 0 });
    assert_eq!(info(&opted[..m]), PackInfo { records: 2, downlink: 2 });
    assert_eq!(decode(&opted[..m]).unwrap(), decode(&plain[..n]).unwrap());
    // The JSON form, in a later record, next to an older value.
    let json = br#"[{"bt":1790000000,"n":"a","v":1,"mekong_dl":1},{"n":"a","v":2,"t":1,"mekong_dl":3}]"#;
    assert_eq!(info(json), PackInfo { records: 2, downlink: 3 });
    for ignored in [&br#"[{"n":"a","v":1,"mekong_dl":"2"}]"#[..], br#"[{"n":"a","v":1,"mekong_dl":-2}]"#] {
        assert_eq!(info(ignored).downlink, 0);
    }
    // CBOR: [{0: "a", 2: 1, "mekong_dl": "x"}] and a huge value.
    let mut cbor = std::vec![0x81, 0xa3, 0x00, 0x61, b'a', 0x02, 0x01, 0x69];
    cbor.extend_from_slice(b"mekong_dl");
    let mut text = cbor.clone();
    text.extend_from_slice(&[0x61, b'x']);
    assert_eq!(info(&text).downlink, 0);
    cbor.extend_from_slice(&[0x19, 0x01, 0x00]);
    assert_eq!(info(&cbor).downlink, u8::MAX);
}

#[test]
fn a_pack_announces_its_records_in_its_array_head_only() {
    let readings: Vec<Reading<'_>> =
        (0..30).map(|i| Reading { name: "water_level", unit: None, value: 1.0, time: f64::from(i) }).collect();
    let mut buf = [0u8; 1024];
    let n = encode_pack(&mut buf, &Base { time: Some(1_790_000_000.0), ..Base::default() }, &readings).unwrap();
    // 30 records need the one-byte length after 0x98.
    assert_eq!(records_announced(&buf[..n]), Some(30));
    assert_eq!(records_announced(&[0x81]), Some(1));
    // Only the head is read: a claim the bytes cannot hold is still the claim.
    assert_eq!(records_announced(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Some(u64::MAX));
    // No definite array, no number: indefinite, a map, a cut head, nothing, JSON.
    for input in [&[0x9f, 0xff][..], &[0xa1, 0x00, 0x01], &[0x99, 0x01], &[], br#"[{"n":"a","v":1}]"#] {
        assert_eq!(records_announced(input), None, "{input:02x?}");
    }
}

#[test]
fn empty_names_point_into_the_pack() {
    // A record with a name and no base name, then one with a base name and no name field at
    // all: each empty half must point into the pack (see `Bases::empty`), never at a dangling
    // address.
    let named = Cbor::default().arr(1).map(2).int(label::N).text("water_level").int(label::V).int(1).done();
    let based = Cbor::default().arr(1).map(2).int(label::BN).text("hau-01:water_level").int(label::V).int(1).done();
    for (input, empty_base) in [(&named, true), (&based, false)] {
        let mut seen = 0;
        decode_pack(input, opts(), &mut |r: Record<'_>| {
            let (empty, other) = if empty_base { (r.base_name, r.name) } else { (r.name, r.base_name) };
            assert!(empty.is_empty() && !other.is_empty(), "{r:?}");
            assert!(input.as_ptr_range().contains(&empty.as_ptr()), "{:p} outside the pack", empty.as_ptr());
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 1);
    }
}

#[test]
fn repeated_names_and_units_are_checked_again_where_anything_changes() {
    // Records that repeat the last checked record's names and unit skip checking them again (see
    // `RawRecord::resolve`); whatever changes, the base name, the name or the unit, is checked.
    let record = |c: Cbor, name: &str, unit: &str, v: i64| {
        c.map(3).int(label::N).text(name).int(label::U).text(unit).int(label::V).int(v)
    };
    let good = |c: Cbor| record(record(c, "water_level", "m", 1), "water_level", "m", 2);
    let input = good(Cbor::default().arr(2)).done();
    assert_eq!(
        decode(&input).unwrap(),
        [owned("water_level", Some("m"), 1.0, NOW), owned("water_level", Some("m"), 2.0, NOW)]
    );
    for (last, expected) in [
        (record(Cbor::default(), "water_level", "m s", 3), RecordError::BadUnit),
        (record(Cbor::default(), "water level", "m", 3), RecordError::BadName),
        (record(Cbor::default(), "water_level", "", 3), RecordError::BadUnit),
        (
            Cbor::default()
                .map(3)
                .int(label::BN)
                .text(&"a".repeat(60))
                .int(label::N)
                .text("water_level")
                .int(label::V)
                .int(3),
            RecordError::BadName,
        ),
        (
            Cbor::default()
                .map(4)
                .int(label::BN)
                .text("a b:")
                .int(label::N)
                .text("water_level")
                .int(label::U)
                .text("m")
                .int(label::V)
                .int(3),
            RecordError::BadName,
        ),
    ] {
        assert_eq!(record_error(&good(Cbor::default().arr(3)).raw(&last.done()).done()), (2, expected));
    }
}

#[test]
fn a_text_like_a_recent_one_is_read_as_itself() {
    // The reader hands out a repeated text at its first place (`Reader::text`): one that
    // differs in any byte, or is not UTF-8, must still be read as what it is.
    for len in 1..=20usize {
        let name: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        for at in 0..len {
            let mut other = name.clone().into_bytes();
            other[at] = if name.as_bytes()[at] == b'q' { b'r' } else { b'q' };
            let other = String::from_utf8(other).unwrap();
            let input = Cbor::default()
                .arr(2)
                .map(2)
                .int(label::N)
                .text(&name)
                .int(label::V)
                .int(1)
                .map(2)
                .int(label::N)
                .text(&other)
                .int(label::V)
                .int(2)
                .done();
            let names: Vec<String> = decode(&input).unwrap().into_iter().map(|r| r.name).collect();
            assert_eq!(names, [name.clone(), other], "length {len}, byte {at}");
            let mut bytes = name.clone().into_bytes();
            bytes[at] = 0xff;
            let mut input = Cbor::default().arr(2).map(2).int(label::N).text(&name).int(label::V).int(1).map(2);
            input = input.int(label::N).head(3, len as u64).raw(&bytes).int(label::V).int(2);
            assert!(
                matches!(decode(&input.done()), Err(DecodeError::Cbor { what: "text string is not utf-8", .. })),
                "length {len}, byte {at}"
            );
        }
    }
}

/// Every record, decoded through both readers, as each reader hands it over or refuses it.
fn both_readers(input: &[u8]) -> [String; 2] {
    let mut out = [String::new(), String::new()];
    for (plain, out) in [true, false].into_iter().zip(&mut out) {
        let mut records = Vec::new();
        let mut sink = |r: Record<'_>| {
            records.push(std::format!("{r:?}"));
            Ok(())
        };
        let result = if plain {
            decode_pack(input, opts(), &mut sink)
        } else {
            cbor::decode_pack_general(input, opts(), &mut sink).map(|i| i.records)
        };
        *out = std::format!("{result:?} {records:?}");
    }
    out
}

#[test]
fn the_plain_record_reader_reads_as_the_general_one() {
    // Every field of RFC 8428's table, and an extension, with values of every form: what the
    // plain reader takes it must take alike, and what it gives up on is read by the other.
    let long = "n".repeat(200);
    let values: Vec<Vec<u8>> = [
        0u64,
        23,
        24,
        255,
        256,
        65_535,
        65_536,
        0xffff_ffff,
        0x1_0000_0000,
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX,
    ]
    .iter()
    .flat_map(|&n| [Cbor::default().head(0, n).done(), Cbor::default().head(1, n).done()])
    .chain([1.5f64, -0.0, 1e300, 0.1, f64::NAN, f64::INFINITY].iter().map(|&x| Cbor::default().f64(x).done()))
    .chain(
        [
            &[0xf9, 0x3e, 0x00][..],
            &[0xf9, 0x7c, 0x00],
            &[0xfa, 0x3f, 0xc0, 0x00, 0x00],
            &[0xfa, 0x7f, 0xc0, 0x00, 0x00],
            &[0xf4],
            &[0xf5],
            &[0xf6],
            &[0x80],
            &[0xa0],
            &[0xc1, 0x01],
            &[0x43, 1, 2, 3],
            &[0x62, 0xc3, 0x28],
            &[0x78, 0x02, b'c', b'm'],
            &[0x79, 0x00, 0x02, b'c', b'm'],
            &[0x7f, 0x61, b'a', 0xff],
            &[0x19, 0x01],
        ]
        .iter()
        .map(|b| b.to_vec()),
    )
    .chain(
        ["", "cm", "water_level", "a23456789012345678901234", long.as_str()]
            .iter()
            .map(|t| Cbor::default().text(t).done()),
    )
    .collect();
    let mut plain = 0;
    for label in (-7..=9).chain([24, -25]) {
        for value in &values {
            // With a name and a value besides, the record passes when the field does; the
            // field given alone, and given twice, is refused or not by both alike.
            let fields = [
                Cbor::default().map(3).int(label::N).text("x").int(label::V).int(1).int(label).raw(value).done(),
                Cbor::default().map(1).int(label).raw(value).done(),
                Cbor::default().map(2).int(label).raw(value).int(label).raw(value).done(),
            ];
            for record in fields {
                let pack = Cbor::default().arr(2).raw(&record).raw(&record).done();
                let [a, b] = both_readers(&pack);
                assert_eq!(a, b, "label {label}, value {value:02x?}");
                plain += usize::from(a.starts_with("Ok"));
            }
        }
    }
    assert!(plain > 300, "{plain} packs passed");
}

#[test]
fn records_as_nodes_write_them_take_the_plain_reader() {
    // Every record of the load generator's pack but the first, which names its downlink
    // version under a text label, is one the plain reader takes whole.
    let readings: Vec<Reading<'_>> = (0..50)
        .map(|j| Reading {
            name: "water_level",
            unit: Some("cm"),
            value: 150.0 + f64::from(j % 50) * 0.5,
            time: f64::from(j) / 1000.0,
        })
        .collect();
    let mut buf = [0u8; 2048];
    let base = Base { time: Some(NOW - 60.0), ..Base::default() };
    let n = encode_pack_with_downlink(&mut buf, &base, &readings, crate::downlink::VERSION_PUBACK).unwrap();
    // The array's head takes two bytes: 0x98, then 50.
    assert_eq!(buf[..2], [0x98, 50]);
    let mut r = cbor::Reader::new(&buf[..n]);
    r.pos = 2;
    let mut raw = RawRecord::default();
    assert_eq!(r.plain_record(&mut raw), None, "a text label is left to the general reader");
    r.pos = 2;
    r.record(&mut raw).unwrap().unwrap();
    for (j, reading) in readings.iter().enumerate().skip(1) {
        assert_eq!(r.plain_record(&mut raw), Some(()), "record {j}");
        assert_eq!((raw.n, raw.u, raw.v), (Some("water_level"), Some("cm"), Some(reading.value)));
    }
    assert_eq!(r.pos, n);
}
