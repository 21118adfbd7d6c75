//! How a resolved SenML name (base name + name) becomes a mekong metric, for names as other
//! SenML ecosystems write them.
//!
//! mekong files a reading under the device of its topic (the broker's login), and under a
//! metric. Three shapes of name are understood:
//!
//! - **Plain** (mekong's own devices): `water_level`, or `bn: "pump-"`, `n: "rpm"`: the
//!   resolved name is the metric, as RFC 8428 resolves it.
//! - **A device URN in the base name** (RFC 8428's examples, device URNs of RFC 9039):
//!   `bn: "urn:dev:ow:10e2073a01080063:"`, `n: "temp"`. A base name that starts with
//!   `urn:dev:` and ends in `:` or `/` names the device, not the measurement: the metric is
//!   `n` alone (`temp`), so that the station's well-known metrics are recognised. The URN is
//!   not checked against the topic (the topic, which the broker authenticates, says whose
//!   reading it is; a device can only ever write its own series), but one pack may name only
//!   one device, so that a gateway cannot merge two devices' readings under one id. A name
//!   that is a device URN and nothing more (`n: "urn:dev:ow:10e2073a01080063"`), or a URN
//!   base name without its separator, says which device but not what was measured: refused.
//! - **LwM2M paths** (OMA LwM2M's SenML: `bn: "/3303/0/"`, `n: "5700"`): a resolved name of
//!   the form `/object/instance/resource[/resource instance]`, all decimal, is the metric
//!   without its leading `/` (`3303/0/5700`: object 3303, temperature, resource 5700, its
//!   value). Other names starting with `/` are refused as before.

use crate::limits::MAX_NAME_LEN;
use crate::senml::{Record, RecordError};

/// The prefix of a device URN (RFC 9039).
pub const DEVICE_URN: &str = "urn:dev:";

/// Whether `name` is an LwM2M path: `/` then 3 or 4 decimal segments separated by `/`.
pub fn is_lwm2m_path(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('/') else { return false };
    let segments = rest.split('/');
    let mut count = 0;
    for s in segments {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        count += 1;
    }
    (3..=4).contains(&count)
}

/// Tracks the device a pack names, across its records: [`Naming::metric`] gives each
/// record's metric.
#[derive(Debug, Default, Clone, Copy)]
pub struct Naming<'a> {
    device: Option<&'a str>,
}

impl<'a> Naming<'a> {
    /// The device URN the pack named so far, if any.
    pub fn device(&self) -> Option<&'a str> {
        self.device
    }

    /// The metric of `record` (checked by [`crate::senml::check_record`] already), written
    /// into `out`; a refusal says why the name cannot be filed.
    pub fn metric<'b>(&mut self, record: &Record<'a>, out: &'b mut [u8; MAX_NAME_LEN]) -> Result<&'b str, RecordError> {
        let (bn, n) = (record.base_name, record.name);
        if bn.starts_with(DEVICE_URN) && (bn.ends_with(':') || bn.ends_with('/')) {
            let device = &bn[..bn.len() - 1];
            match self.device {
                Some(first) if first != device => {
                    return Err(RecordError::Naming("a pack may name only one device (two urn:dev base names)"))
                }
                _ => self.device = Some(device),
            }
            if n.is_empty() {
                return Err(RecordError::Naming("a device urn base name needs a measurement name (n)"));
            }
            return Ok(copy(n, out));
        }
        let len = record.name_into(out).len();
        let (skip, urn) = {
            let resolved = &out[..len];
            (usize::from(resolved.first() == Some(&b'/')), resolved.starts_with(DEVICE_URN.as_bytes()))
        };
        if urn {
            return Err(RecordError::Naming(
                "a name starting with urn:dev: must be a base name ending in ':' or '/', then the measurement (n)",
            ));
        }
        // check_record lets a leading '/' through only for an LwM2M path.
        out.copy_within(skip..len, 0);
        Ok(core::str::from_utf8(&out[..len - skip]).unwrap_or(""))
    }
}

fn copy<'b>(s: &str, out: &'b mut [u8; MAX_NAME_LEN]) -> &'b str {
    let len = s.len().min(MAX_NAME_LEN);
    out[..len].copy_from_slice(&s.as_bytes()[..len]);
    core::str::from_utf8(&out[..len]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::senml::Value;

    fn record<'a>(bn: &'a str, n: &'a str) -> Record<'a> {
        Record { base_name: bn, name: n, unit: None, value: Value::Number(1.0), time: 1.8e9 }
    }

    fn check(naming: &mut Naming<'static>, bn: &'static str, n: &'static str, expected: Result<&str, &str>) {
        let mut out = [0u8; MAX_NAME_LEN];
        let got = naming.metric(&record(bn, n), &mut out).map(std::string::String::from);
        let got = got.as_deref().map_err(|e| match e {
            RecordError::Naming(why) => *why,
            other => panic!("{other:?}"),
        });
        assert_eq!(got, expected, "{bn:?} + {n:?}");
    }

    #[test]
    fn names_become_metrics() {
        let mut n = Naming::default();
        check(&mut n, "", "water_level", Ok("water_level"));
        check(&mut n, "pump-", "rpm", Ok("pump-rpm"));
        check(&mut n, "urn:dev:ow:10e2073a01080063:", "temp", Ok("temp"));
        check(&mut n, "urn:dev:ow:10e2073a01080063:", "water_level", Ok("water_level"));
        assert_eq!(n.device(), Some("urn:dev:ow:10e2073a01080063"));
        let mut n = Naming::default();
        check(&mut n, "urn:dev:mac:0024befffe804ff1/", "pm2_5", Ok("pm2_5"));
        check(&mut n, "/3303/0/", "5700", Ok("3303/0/5700"));
        check(&mut n, "/", "3304/1/5700", Ok("3304/1/5700"));
        check(&mut n, "/3303/0/5700/", "1", Ok("3303/0/5700/1"));
    }

    #[test]
    fn names_that_cannot_be_filed_are_refused() {
        let mut n = Naming::default();
        check(
            &mut n,
            "",
            "urn:dev:ow:10e2073a01080063",
            Err("a name starting with urn:dev: must be a base name ending in ':' or '/', then the measurement (n)"),
        );
        check(
            &mut n,
            "urn:dev:ow:10e2073a01080063",
            "",
            Err("a name starting with urn:dev: must be a base name ending in ':' or '/', then the measurement (n)"),
        );
        check(&mut n, "urn:dev:ow:10e2073a01080063:", "", Err("a device urn base name needs a measurement name (n)"));
        let mut n = Naming::default();
        check(&mut n, "urn:dev:ow:1:", "temp", Ok("temp"));
        check(&mut n, "urn:dev:ow:2:", "temp", Err("a pack may name only one device (two urn:dev base names)"));
    }

    #[test]
    fn lwm2m_paths_are_recognised_exactly() {
        for yes in ["/3303/0/5700", "/1/2/3/4", "/65535/0/0"] {
            assert!(is_lwm2m_path(yes), "{yes}");
        }
        for no in ["3303/0/5700", "/3303/0", "/3303/0/5700/1/2", "/3303//5700", "/a/0/1", "/3303/0/5700/", "/"] {
            assert!(!is_lwm2m_path(no), "{no}");
        }
    }
}
