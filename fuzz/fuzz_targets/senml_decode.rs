//! Fuzzes the SenML-CBOR pack decoder (`mekong_schema::decode_pack`), which reads every
//! uplink a device sends.
//!
//! Properties: no panic; the count it returns is the number of records it handed over; every
//! record it hands over passes the contract's checks and borrows its strings from the input;
//! and a pack of numeric records, encoded again with `encode_pack`, decodes to the same
//! records (resolved names, units, values and times, bit for bit). The count a pack announces
//! (`records_announced`, read on every input) is the count decoded, when the pack decodes and
//! its array has a length. And the general record reader, alone, reads every input as the
//! decoder does with its reader of plain records (`cbor::decode_pack_general`): the same
//! records, or the same refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_schema::senml::cbor::decode_pack_general;
use mekong_schema::senml::{check_record, records_announced, DecodeOptions};
use mekong_schema::{decode_pack, encode_pack, Base, Reading, Record, Value};

/// The time of receipt: 2026-09-21, so that packs built from the fixtures are in the window.
const NOW: f64 = 1_790_000_000.0;

/// A record with its resolved name, owned, to compare across two decodes.
#[derive(Debug, PartialEq)]
struct Resolved {
    name: String,
    unit: Option<String>,
    value: u64,
    time: u64,
}

fn within(input: &[u8], s: &[u8]) -> bool {
    let (start, end) = (input.as_ptr() as usize, input.as_ptr() as usize + input.len());
    s.is_empty() || (s.as_ptr() as usize >= start && s.as_ptr() as usize + s.len() <= end)
}

fn decode(input: &[u8], max_records: usize) -> Result<Vec<Record<'_>>, mekong_schema::DecodeError> {
    let mut records = Vec::new();
    let opts = DecodeOptions { now: NOW, max_records };
    let n = decode_pack(input, opts, &mut |r| {
        records.push(r);
        Ok(())
    })?;
    assert_eq!(n, records.len(), "the count is the records handed over");
    Ok(records)
}

/// What the general reader makes of `input`: its records, or its refusal, as text.
fn decode_general(input: &[u8], max_records: usize) -> String {
    let mut records = Vec::new();
    let opts = DecodeOptions { now: NOW, max_records };
    let result = decode_pack_general(input, opts, &mut |r| {
        records.push(r);
        Ok(())
    });
    format!("{:?}", result.map(|_| records))
}

fuzz_target!(|input: &[u8]| {
    // The server's limit is 1,000 records a pack; a small one here reaches the limit's path too.
    let max_records = if input.len().is_multiple_of(2) { 1_000 } else { 3 };
    let announced = records_announced(input);
    let decoded = decode(input, max_records);
    assert_eq!(format!("{decoded:?}"), decode_general(input, max_records), "the two readers differ");
    let Ok(records) = decoded else { return };
    assert!(records.len() <= max_records);
    if let Some(n) = announced {
        assert_eq!(n, records.len() as u64, "a definite array holds what it announces");
    }
    let mut numeric = Vec::new();
    for r in &records {
        assert_eq!(check_record(r, NOW), Ok(()), "{r:?}");
        for s in [r.base_name.as_bytes(), r.name.as_bytes(), r.unit.unwrap_or("").as_bytes()] {
            assert!(within(input, s), "strings are borrowed from the input");
        }
        match r.value {
            Value::String(s) => assert!(within(input, s.as_bytes())),
            Value::Data(d) => assert!(within(input, d)),
            Value::DataText(_) => panic!("the cbor decoder never hands over base64 text"),
            Value::Number(v) => numeric.push(Resolved {
                name: format!("{}{}", r.base_name, r.name),
                unit: r.unit.map(str::to_owned),
                value: v.to_bits(),
                time: r.time.to_bits(),
            }),
            Value::Bool(_) | Value::SumOnly(_) => {}
        }
    }
    if numeric.len() != records.len() || records.is_empty() {
        return;
    }
    // Every time is absolute after resolution (after 2000, far above RFC 8428's 2^28), so
    // the pack encodes without base fields.
    let readings: Vec<Reading<'_>> = numeric
        .iter()
        .map(|r| Reading {
            name: &r.name,
            unit: r.unit.as_deref(),
            value: f64::from_bits(r.value),
            time: f64::from_bits(r.time),
        })
        .collect();
    let mut out = vec![0u8; 64 + input.len() * 4 + readings.len() * 96];
    let n = encode_pack(&mut out, &Base::default(), &readings).expect("decoded records encode");
    let again = decode(&out[..n], max_records).expect("an encoded pack decodes");
    let again: Vec<Resolved> = again
        .iter()
        .map(|r| match r.value {
            Value::Number(v) => Resolved {
                name: format!("{}{}", r.base_name, r.name),
                unit: r.unit.map(str::to_owned),
                value: v.to_bits(),
                time: r.time.to_bits(),
            },
            other => panic!("a numeric reading came back as {other:?}"),
        })
        .collect();
    assert_eq!(again, numeric);
});
