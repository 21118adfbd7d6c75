//! Fuzzes the SenML-JSON pack decoder (`mekong_schema::senml::json::decode_json_pack`), which
//! reads every uplink whose first byte says JSON.
//!
//! Properties: no panic, no hang and no stack overflow whatever the nesting; the count it
//! returns is the number of records it handed over; every record passes the contract's
//! checks and borrows its strings from the input; and a pack of numeric records, encoded as
//! SenML-CBOR with `encode_pack`, decodes to the same records (resolved names, units, values
//! and times, bit for bit): the two forms resolve alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mekong_schema::senml::json::decode_json_pack;
use mekong_schema::senml::{check_record, DecodeOptions};
use mekong_schema::{decode_pack, encode_pack, Base, Reading, Record, Value};

/// The time of receipt: 2026-09-21.
const NOW: f64 = 1_790_000_000.0;

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

fn resolved(r: &Record<'_>, v: f64) -> Resolved {
    Resolved {
        name: format!("{}{}", r.base_name, r.name),
        unit: r.unit.map(str::to_owned),
        value: v.to_bits(),
        time: r.time.to_bits(),
    }
}

fuzz_target!(|input: &[u8]| {
    let max_records = if input.len().is_multiple_of(2) { 1_000 } else { 3 };
    let opts = DecodeOptions { now: NOW, max_records };
    let mut records = Vec::new();
    let Ok(n) = decode_json_pack(input, opts, &mut |r| {
        records.push(r);
        Ok(())
    }) else {
        return;
    };
    assert_eq!(n, records.len(), "the count is the records handed over");
    assert!(records.len() <= max_records);
    let mut numeric = Vec::new();
    for r in &records {
        assert_eq!(check_record(r, NOW), Ok(()), "{r:?}");
        for s in [r.base_name.as_bytes(), r.name.as_bytes(), r.unit.unwrap_or("").as_bytes()] {
            assert!(within(input, s), "strings are borrowed from the input");
        }
        match r.value {
            Value::String(s) | Value::DataText(s) => assert!(within(input, s.as_bytes())),
            Value::Data(_) => panic!("the json decoder never hands over bytes"),
            Value::Number(v) => numeric.push(resolved(r, v)),
            Value::Bool(_) | Value::SumOnly(_) => {}
        }
    }
    if numeric.len() != records.len() || records.is_empty() {
        return;
    }
    let readings: Vec<Reading<'_>> = numeric
        .iter()
        .map(|r| Reading {
            name: &r.name,
            unit: r.unit.as_deref(),
            value: f64::from_bits(r.value),
            time: f64::from_bits(r.time),
        })
        .collect();
    let mut out = vec![0u8; 64 + readings.len() * 128];
    let n = encode_pack(&mut out, &Base::default(), &readings).expect("decoded records encode");
    let mut again = Vec::new();
    decode_pack(&out[..n], opts, &mut |r| {
        let Value::Number(v) = r.value else { panic!("a numeric reading came back as {:?}", r.value) };
        again.push(resolved(&r, v));
        Ok(())
    })
    .expect("the cbor form decodes");
    assert_eq!(again, numeric);
});
