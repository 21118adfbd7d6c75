//! Parquet output through the parquet crate's column writers: rows are gathered column by
//! column up to [`ROW_GROUP_ROWS`], then written as one row group, so that memory holds at
//! most one row group whatever the export's length.
//!
//! Columns: `device`, `kind`, `metric` (strings; dictionary-encoded, so a million rows of one
//! series cost a few bytes each), `unit` (a string, null when the readings gave none),
//! `time` (INT64, TIMESTAMP(MILLIS, UTC), delta-encoded: regular readings cost almost
//! nothing), `value` (DOUBLE; a boolean as 1 or 0) and `value_bool` (BOOLEAN: the reading of a
//! boolean series, null for numbers). Pages are compressed with zstd (level 3).

use std::io::Write;
use std::sync::Arc;

use mekong_store::{Point, ValueKind};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DataType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;

use crate::plan::Planned;
use crate::ExportError;

/// Rows in one row group: about 25 MB of gathered columns while it fills.
pub const ROW_GROUP_ROWS: usize = 1_000_000;

/// Rows of one string column handed to the column writer at once.
const STRING_SLICE: usize = 65_536;

/// The file's schema, in Parquet's message syntax.
pub const SCHEMA: &str = "message reading {
    REQUIRED BYTE_ARRAY device (STRING);
    REQUIRED BYTE_ARRAY kind (STRING);
    REQUIRED BYTE_ARRAY metric (STRING);
    OPTIONAL BYTE_ARRAY unit (STRING);
    REQUIRED INT64 time (TIMESTAMP(MILLIS, true));
    REQUIRED DOUBLE value;
    OPTIONAL BOOLEAN value_bool;
}";

/// Writes rows to `W`, a row group at a time.
pub(crate) struct ParquetWriter<W: Write + Send> {
    file: SerializedFileWriter<W>,
    group: Group,
    group_rows: usize,
}

impl<W: Write + Send> std::fmt::Debug for ParquetWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetWriter").field("rows", &self.group.times.len()).finish_non_exhaustive()
    }
}

/// The rows of the row group being gathered, column by column; the strings once per run of
/// one series.
#[derive(Default)]
struct Group {
    runs: Vec<(Arc<Strings>, usize)>,
    times: Vec<i64>,
    values: Vec<f64>,
    /// Definition levels of `value_bool` (1: a boolean, 0: null) and its booleans.
    bool_levels: Vec<i16>,
    bools: Vec<bool>,
}

/// What every row of one series repeats.
struct Strings {
    device: ByteArray,
    kind: ByteArray,
    metric: ByteArray,
    unit: Option<ByteArray>,
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn with_row_group(out: W, group_rows: usize) -> Result<Self, ExportError> {
        let schema = Arc::new(parse_message_type(SCHEMA)?);
        let time = ColumnPath::from("time");
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_created_by(format!("mekong {}", env!("CARGO_PKG_VERSION")))
            .set_max_row_group_row_count(None)
            .set_column_dictionary_enabled(time.clone(), false)
            .set_column_encoding(time, Encoding::DELTA_BINARY_PACKED)
            .build();
        let file = SerializedFileWriter::new(out, schema, Arc::new(properties))?;
        Ok(ParquetWriter { file, group: Group::default(), group_rows: group_rows.max(1) })
    }

    pub fn write(&mut self, series: &Planned, mut points: &[Point]) -> Result<(), ExportError> {
        let strings = Arc::new(Strings {
            device: ByteArray::from(series.device.as_str()),
            kind: ByteArray::from(series.kind.as_str()),
            metric: ByteArray::from(series.metric.as_str()),
            unit: series.unit.as_deref().map(ByteArray::from),
        });
        while !points.is_empty() {
            let room = self.group_rows - self.group.times.len();
            let (now, later) = points.split_at(room.min(points.len()));
            self.group.runs.push((Arc::clone(&strings), now.len()));
            self.group.times.extend(now.iter().map(|p| p.time_ms));
            self.group.values.extend(now.iter().map(|p| p.value));
            match series.value_kind {
                ValueKind::Number => self.group.bool_levels.extend(std::iter::repeat_n(0, now.len())),
                ValueKind::Boolean => {
                    self.group.bool_levels.extend(std::iter::repeat_n(1, now.len()));
                    self.group.bools.extend(now.iter().map(|p| p.value != 0.0));
                }
            }
            if self.group.times.len() >= self.group_rows {
                self.flush_group()?;
            }
            points = later;
        }
        Ok(())
    }

    /// Writes the gathered rows as one row group.
    fn flush_group(&mut self) -> Result<(), ExportError> {
        let group = std::mem::take(&mut self.group);
        if group.times.is_empty() {
            return Ok(());
        }
        let mut rows = self.file.next_row_group()?;
        let mut column = 0;
        while let Some(mut writer) = rows.next_column()? {
            match column {
                0 => strings(&mut writer, &group.runs, |s| Some(&s.device))?,
                1 => strings(&mut writer, &group.runs, |s| Some(&s.kind))?,
                2 => strings(&mut writer, &group.runs, |s| Some(&s.metric))?,
                3 => strings(&mut writer, &group.runs, |s| s.unit.as_ref())?,
                4 => write_all::<Int64Type>(&mut writer, &group.times, None)?,
                5 => write_all::<DoubleType>(&mut writer, &group.values, None)?,
                _ => write_all::<BoolType>(&mut writer, &group.bools, Some(&group.bool_levels))?,
            }
            writer.close()?;
            column += 1;
        }
        rows.close()?;
        Ok(())
    }

    /// The output, with every finished row group flushed into it (for a caller that takes
    /// the bytes as they come).
    pub fn get_mut(&mut self) -> Result<&mut W, ExportError> {
        self.file.flush()?;
        Ok(self.file.inner_mut())
    }

    pub fn finish(mut self) -> Result<W, ExportError> {
        self.flush_group()?;
        let mut out = self.file.into_inner()?;
        out.flush()?;
        Ok(out)
    }
}

/// Writes one string column of a row group, run by run; `pick` gives a run's string, or
/// `None` for a null (the column is then OPTIONAL).
fn strings(
    writer: &mut SerializedColumnWriter<'_>,
    runs: &[(Arc<Strings>, usize)],
    pick: impl Fn(&Strings) -> Option<&ByteArray>,
) -> Result<(), ExportError> {
    let typed = writer.typed::<ByteArrayType>();
    let optional = typed.get_descriptor().max_def_level() > 0;
    let mut values = Vec::new();
    let mut levels = Vec::new();
    for (run, len) in runs {
        let value = pick(run);
        // In slices, so that a run of a whole row group never makes a million copies at once.
        let mut left = *len;
        while left > 0 {
            let n = left.min(STRING_SLICE);
            left -= n;
            values.clear();
            levels.clear();
            if let Some(value) = value {
                values.extend(std::iter::repeat_n(value.clone(), n));
            }
            if optional {
                levels.extend(std::iter::repeat_n(i16::from(value.is_some()), n));
                typed.write_batch(&values, Some(&levels), None)?;
            } else {
                typed.write_batch(&values, None, None)?;
            }
        }
    }
    Ok(())
}

/// Writes a column of plain values (with definition levels when it is OPTIONAL).
fn write_all<T: DataType>(
    writer: &mut SerializedColumnWriter<'_>,
    values: &[T::T],
    levels: Option<&[i16]>,
) -> Result<(), ExportError> {
    writer.typed::<T>().write_batch(values, levels, None)?;
    Ok(())
}
