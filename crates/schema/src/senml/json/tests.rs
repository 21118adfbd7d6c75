//! Tests of the SenML-JSON decoder: the same records as the CBOR form of the same pack
//! (RFC 8428's examples), and every kind of bad JSON a script can send.

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use super::super::{decode, decode_pack, label};
use super::*;
use crate::limits::MAX_NAME_LEN;

const NOW: f64 = 1_790_000_000.0;

fn opts() -> DecodeOptions {
    DecodeOptions { now: NOW, max_records: 100 }
}

/// A resolved record, owned, with its value spelled out so that forms can be compared.
#[derive(Debug, PartialEq)]
struct Owned {
    name: String,
    unit: Option<String>,
    value: String,
    time: u64,
}

fn owned(r: &Record<'_>) -> Owned {
    let mut buf = [0u8; MAX_NAME_LEN];
    Owned {
        name: r.name_into(&mut buf).to_string(),
        unit: r.unit.map(Into::into),
        value: format!("{:?}", r.value),
        time: r.time.to_bits(),
    }
}

fn json(input: &str) -> Result<Vec<Owned>, DecodeError> {
    let mut out = Vec::new();
    let n = decode(input.as_bytes(), opts(), &mut |r: Record<'_>| {
        out.push(owned(&r));
        Ok(())
    })?;
    assert_eq!(n, out.len());
    Ok(out)
}

fn cbor(input: &[u8]) -> Vec<Owned> {
    let mut out = Vec::new();
    decode_pack(input, opts(), &mut |r: Record<'_>| {
        out.push(owned(&r));
        Ok(())
    })
    .unwrap();
    out
}

/// CBOR of a pack of records given as (label, value) pairs, built by hand.
enum V<'a> {
    I(i64),
    F(f64),
    T(&'a str),
    B(bool),
}

fn cbor_pack(records: &[&[(i64, V<'_>)]]) -> Vec<u8> {
    fn head(out: &mut Vec<u8>, major: u8, n: u64) {
        let m = major << 5;
        if n < 24 {
            out.push(m | n as u8);
        } else {
            out.push(m | 27);
            out.extend(n.to_be_bytes());
        }
    }
    fn int(out: &mut Vec<u8>, i: i64) {
        if i >= 0 {
            head(out, 0, i as u64);
        } else {
            head(out, 1, (-1 - i) as u64);
        }
    }
    let mut out = Vec::new();
    head(&mut out, 4, records.len() as u64);
    for record in records {
        head(&mut out, 5, record.len() as u64);
        for (l, v) in *record {
            int(&mut out, *l);
            match v {
                V::I(i) => int(&mut out, *i),
                V::F(f) => {
                    out.push(0xfb);
                    out.extend(f.to_bits().to_be_bytes());
                }
                V::T(t) => {
                    head(&mut out, 3, t.len() as u64);
                    out.extend(t.as_bytes());
                }
                V::B(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            }
        }
    }
    out
}

#[test]
fn rfc_8428_multiple_datapoints_resolve_as_their_cbor_form() {
    // RFC 8428 section 5.1.2, with a base time so that it is in the window.
    let j = r#"[
     {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,"n":"voltage","u":"V","v":120.1},
     {"n":"current","t":-5,"v":1.2},
     {"n":"current","t":-4,"v":1.3},
     {"n":"current","t":-3,"v":1.4e0}
    ]"#;
    let c = cbor_pack(&[
        &[
            (label::BN, V::T("urn:dev:ow:10e2073a01080063:")),
            (label::BT, V::F(1.320067464e9)),
            (label::N, V::T("voltage")),
            (label::U, V::T("V")),
            (label::V, V::F(120.1)),
        ],
        &[(label::N, V::T("current")), (label::T, V::I(-5)), (label::V, V::F(1.2))],
        &[(label::N, V::T("current")), (label::T, V::I(-4)), (label::V, V::F(1.3))],
        &[(label::N, V::T("current")), (label::T, V::I(-3)), (label::V, V::F(1.4))],
    ]);
    let got = json(j).unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(got, cbor(&c));
    assert_eq!(got[1].name, "urn:dev:ow:10e2073a01080063:current");
    assert_eq!(f64::from_bits(got[1].time), 1_320_067_459.0);
}

#[test]
fn every_value_type_and_base_field_resolves_as_in_cbor() {
    // RFC 8428 section 5.1.5 (multiple data types), plus base value, base unit and bver.
    let j = r#"[{"bver":10,"bn":"urn:dev:ow:10e2073a01080063:","bt":1790000000,"bu":"Cel","n":"temp","v":23.1},
      {"n":"label","vs":"Machine Room"},{"n":"open","vb":false},{"bv":100,"n":"level","v":-0.5,"t":1.25},
      {"n":"base_only"},{"n":"sum","s":7,"bv":null}]"#;
    let err = json(j).unwrap_err();
    // a null base value is a wrong type, in record 5, as CBOR's null would be
    assert!(
        matches!(err, DecodeError::Record { index: 5, error: RecordError::WrongType { field: "bv", .. } }),
        "{err:?}"
    );
    let j = j.replace(r#","bv":null"#, "");
    let c = cbor_pack(&[
        &[
            (label::BVER, V::I(10)),
            (label::BN, V::T("urn:dev:ow:10e2073a01080063:")),
            (label::BT, V::I(1_790_000_000)),
            (label::BU, V::T("Cel")),
            (label::N, V::T("temp")),
            (label::V, V::F(23.1)),
        ],
        &[(label::N, V::T("label")), (label::VS, V::T("Machine Room"))],
        &[(label::N, V::T("open")), (label::VB, V::B(false))],
        &[(label::BV, V::I(100)), (label::N, V::T("level")), (label::V, V::F(-0.5)), (label::T, V::F(1.25))],
        &[(label::N, V::T("base_only"))],
        &[(label::N, V::T("sum")), (label::S, V::I(7))],
    ]);
    let got = json(&j).unwrap();
    assert_eq!(got, cbor(&c));
    assert_eq!(got[3].value, "Number(99.5)");
    assert_eq!(got[4].value, "Number(100.0)");
    assert_eq!(got[2].value, "Bool(false)");
}

#[test]
fn vd_is_handed_over_as_checked_base64url_text() {
    let got = json(r#"[{"n":"nfc-reader","vd":"aGkgCg"}]"#).unwrap();
    assert_eq!(got[0].value, r#"DataText("aGkgCg")"#);
    let err = json(r#"[{"n":"nfc-reader","vd":"a+b/"}]"#).unwrap_err();
    assert_eq!(err.kind(), crate::Reason::WrongType);
}

#[test]
fn the_first_byte_tells_the_forms_apart() {
    let c = cbor_pack(&[&[(label::N, V::T("water_level")), (label::V, V::I(3))]]);
    assert!(!super::super::is_json(&c));
    assert!(super::super::is_json(b" [{\"n\":\"water_level\",\"v\":3}]"));
    let mut out = Vec::new();
    decode(&c, opts(), &mut |r: Record<'_>| {
        out.push(owned(&r));
        Ok(())
    })
    .unwrap();
    assert_eq!(out, json("\r\n\t [ {\"n\" : \"water_level\" , \"v\" : 3 } ] \n").unwrap());
}

#[test]
fn bad_json_is_refused_with_a_reason() {
    use crate::Reason;
    fn check(input: &str, kind: Reason, message: &str) {
        let err = json(input).unwrap_err();
        assert_eq!(err.kind(), kind, "{input}: {err}");
        assert!(err.to_string().contains(message), "{input}: {err}");
    }
    check("", Reason::Empty, "empty");
    check("   ", Reason::Empty, "empty");
    check(r#"{"n":"x","v":1}"#, Reason::NotSenml, "top-level item is an object");
    check("[", Reason::Truncated, "truncated json");
    check(r#"[{"n":"x","v":1"#, Reason::Truncated, "truncated json");
    check(r#"[{"n":"x","v":1.}]"#, Reason::InvalidJson, "invalid number");
    check(r#"[{"n":"x","v":01}]"#, Reason::InvalidJson, "byte 15");
    check(r#"[{"n":"x" "v":1}]"#, Reason::InvalidJson, "expected , or }");
    check(r#"[{"n":"x","v":1},]"#, Reason::InvalidJson, "byte 17: expected a value");
    check(r#"[{"n":"a\"b","v":1}]"#, Reason::InvalidJson, "escape sequences");
    check(r#"[{"n":"x","v":tru}]"#, Reason::InvalidJson, "invalid literal");
    check(r#"[{"n":"x","v":1}] x"#, Reason::InvalidJson, "bytes after the pack");
    check(r#"[{"n":"x","v":1}][]"#, Reason::InvalidJson, "bytes after the pack");
    check(r#"[{n:"x"}]"#, Reason::InvalidJson, "expected a string key");
    check("[{\"n\":\"x\u{1}\",\"v\":1}]", Reason::InvalidJson, "control character");
    check(r#"[{"n":"x","v":1e999}]"#, Reason::NotFinite, "not a finite number");
    check(r#"[{"n":"x","v":"1"}]"#, Reason::WrongType, "field v must be a number, found a string");
    check(r#"[{"n":"x","v":1,"v":2}]"#, Reason::InvalidRecord, "appears twice");
    check(r#"[{"n":"x","v":1,"x_":2}]"#, Reason::InvalidRecord, "must-understand");
    check(r#"[3]"#, Reason::InvalidRecord, "record is not a map");
    check(r#"[{"n":"x"}]"#, Reason::InvalidRecord, "exactly one value");
    check(r#"[{"n":"x","v":1,"t":-1e9}]"#, Reason::BadTime, "before 2000");
    check(r#"[{"bver":11,"n":"x","v":1}]"#, Reason::InvalidRecord, "version 11");
    check(r#"[{"bver":1.5,"n":"x","v":1}]"#, Reason::WrongType, "bver");
}

#[test]
fn unknown_keys_and_nested_extensions_are_skipped() {
    let got = json(r#"[{"n":"x","ext":{"a":[1,{"b":null}],"c":"d"},"v":1,"other":[true,false]}]"#).unwrap();
    assert_eq!(got[0].value, "Number(1.0)");
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    let deep = format!(r#"[{{"n":"x","v":1,"e":{}{}}}]"#, "[".repeat(100_000), "]".repeat(100_000));
    let err = json(&deep).unwrap_err();
    assert!(err.to_string().contains("nested too deep"), "{err}");
    let deep = "[".repeat(100_000);
    assert!(json(&deep).is_err());
}

#[test]
fn too_many_records_are_refused() {
    let many = format!("[{}{{\"n\":\"x\",\"v\":1}}]", "{\"n\":\"x\",\"v\":1},".repeat(100));
    let err = json(&many).unwrap_err();
    assert!(matches!(err, DecodeError::Record { index: 100, error: RecordError::TooManyRecords(100) }), "{err:?}");
}

#[test]
fn strings_are_borrowed_from_the_input() {
    let input = br#"[{"bn":"station-","n":"water_level","u":"cm","v":1}]"#;
    decode(input, opts(), &mut |r: Record<'_>| {
        let range = input.as_ptr_range();
        for s in [r.base_name, r.name, r.unit.unwrap_or("")] {
            assert!(range.contains(&s.as_ptr()), "{s}");
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn empty_names_point_into_the_pack() {
    // No base name, then no name: the empty half points into the pack (`Bases::empty`).
    for input in [&br#"[{"n":"water_level","v":1}]"#[..], &br#"[{"bn":"hau-01:water_level","v":1}]"#[..]] {
        let mut seen = 0;
        decode(input, opts(), &mut |r: Record<'_>| {
            let empty = if r.base_name.is_empty() { r.base_name } else { r.name };
            assert!(empty.is_empty(), "{r:?}");
            assert!(input.as_ptr_range().contains(&empty.as_ptr()), "{:p} outside the pack", empty.as_ptr());
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 1);
    }
}
