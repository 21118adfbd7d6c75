//! CSV output (RFC 4180): a header row, CRLF line ends, a field quoted only when it holds a
//! comma, a quote or a line break.

use std::io::Write;

use mekong_store::{Point, ValueKind};

use crate::plan::Planned;
use crate::{time, ExportError};

/// The header row.
pub const HEADER: &str = "device,kind,metric,unit,time,value,value_bool\r\n";

/// Writes rows to `out`, one batch of one series at a time.
#[derive(Debug)]
pub(crate) struct CsvWriter<W: Write> {
    out: W,
    /// The batch being formatted: one `write_all` per batch, however many rows.
    line: Vec<u8>,
    /// The quoted `device,kind,metric,unit,` of the series last written.
    prefix: Vec<u8>,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(mut out: W) -> Result<Self, ExportError> {
        out.write_all(HEADER.as_bytes())?;
        Ok(CsvWriter { out, line: Vec::new(), prefix: Vec::new() })
    }

    pub fn write(&mut self, series: &Planned, points: &[Point]) -> Result<(), ExportError> {
        self.prefix.clear();
        for text in [series.device.as_str(), &series.kind, &series.metric, series.unit.as_deref().unwrap_or("")] {
            field(&mut self.prefix, text);
            self.prefix.push(b',');
        }
        self.line.clear();
        for p in points {
            self.line.extend_from_slice(&self.prefix);
            time::push_rfc3339(&mut self.line, p.time_ms);
            self.line.push(b',');
            // f64's Display is the shortest text that reads back as the same number.
            let _ = write!(self.line, "{}", p.value);
            match series.value_kind {
                ValueKind::Number => self.line.extend_from_slice(b",\r\n"),
                ValueKind::Boolean if p.value != 0.0 => self.line.extend_from_slice(b",true\r\n"),
                ValueKind::Boolean => self.line.extend_from_slice(b",false\r\n"),
            }
        }
        self.out.write_all(&self.line)?;
        Ok(())
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn finish(mut self) -> Result<W, ExportError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One field, quoted as RFC 4180 asks when it holds a comma, a quote or a line break.
fn field(out: &mut Vec<u8>, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(value.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    fn check(input: &str, expected: &str) {
        let mut out = Vec::new();
        field(&mut out, input);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        check("hau-01", "hau-01");
        check("a,b", "\"a,b\"");
        check("say \"hi\"", "\"say \"\"hi\"\"\"");
        check("two\r\nlines", "\"two\r\nlines\"");
        check("", "");
    }
}
