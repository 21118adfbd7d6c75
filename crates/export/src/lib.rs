//! Export of readings for open data and analysis: a time range of the store, optionally
//! narrowed to a kind, devices and metrics, as CSV (RFC 4180) or Apache Parquet.
//!
//! A year of a city is billions of readings, so an export never holds them: [`Export`] walks
//! the selected series one after another (by device id, then metric, then time: the order of
//! the rows) and reads each a page of at most [`PAGE_POINTS`] points at a time through the
//! store's public range query, writing each page before reading the next. CSV goes straight
//! to the output; Parquet gathers one row group ([`ROW_GROUP_ROWS`] rows) before writing it,
//! so memory stays at about one row group whatever the range.
//!
//! The work is done in steps ([`Export::step`]) of a bounded number of rows, so that a
//! caller can report progress between steps (the command line's bar) or run each step as a
//! bounded piece of work and ship the bytes made so far ([`Export::take_output`], the API's
//! streamed answer). [`run`] does all the steps.
//!
//! Columns, in both formats: `device`, `kind`, `metric`, `unit` (empty in CSV, null in
//! Parquet, when the readings gave none), `time` (CSV: RFC 3339 in UTC with milliseconds;
//! Parquet: INT64 TIMESTAMP(MILLIS, UTC)), `value` (a float; a reading of a boolean series,
//! SenML `vb`, as 1 or 0, as the store keeps it, so that sums and means need no second
//! column) and `value_bool` (`true`/`false` for a reading of a boolean series, empty in CSV
//! and null in Parquet for a number): a boolean series is told by `value_bool` not being null.
#![warn(missing_docs)]

mod csv;
mod error;
mod parquet;
mod plan;
mod time;

use std::io::Write;

use mekong_store::Store;

pub use crate::csv::HEADER as CSV_HEADER;
pub use crate::error::ExportError;
pub use crate::parquet::{ROW_GROUP_ROWS, SCHEMA as PARQUET_SCHEMA};
use crate::plan::Planned;
pub use crate::time::push_rfc3339;

/// Most points read from the store at once.
pub const PAGE_POINTS: usize = 65_536;

/// What to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Start of the range, inclusive, ms since the Unix epoch.
    pub from_ms: i64,
    /// End of the range, exclusive.
    pub to_ms: i64,
    /// Only devices of this kind.
    pub kind: Option<String>,
    /// Only these devices (all when empty).
    pub devices: Vec<String>,
    /// Only these metrics (all when empty).
    pub metrics: Vec<String>,
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// Apache Parquet, zstd-compressed.
    Parquet,
}

impl Format {
    /// `csv` or `parquet`.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// Its name, which is also the file extension.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// Its media type.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// How far an export has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Series written whole.
    pub series_done: usize,
    /// Series selected.
    pub series_total: usize,
    /// Readings written.
    pub readings: u64,
    /// Readings expected in all (exact for series wholly inside the range, estimated for
    /// the others).
    pub readings_estimate: u64,
}

/// An export under way, writing to `W`.
#[derive(Debug)]
pub struct Export<W: Write + Send> {
    store: Store,
    query: Query,
    plan: Vec<Planned>,
    /// Where the current series (`plan[progress.series_done]`) resumes.
    resume_ms: i64,
    writer: Writer<W>,
    progress: Progress,
}

#[derive(Debug)]
enum Writer<W: Write + Send> {
    Csv(csv::CsvWriter<W>),
    Parquet(Box<parquet::ParquetWriter<W>>),
}

impl<W: Write + Send> Export<W> {
    /// Checks `query`, selects its series and writes the start of the output (CSV's header).
    pub fn start(store: &Store, query: Query, format: Format, out: W) -> Result<Self, ExportError> {
        Self::start_with_row_group(store, query, format, out, ROW_GROUP_ROWS)
    }

    /// [`Export::start`] with Parquet row groups of `group_rows` (tests make several small
    /// ones).
    pub fn start_with_row_group(
        store: &Store,
        query: Query,
        format: Format,
        out: W,
        group_rows: usize,
    ) -> Result<Self, ExportError> {
        if query.from_ms >= query.to_ms {
            return Err(ExportError::BadQuery(format!(
                "the range is empty: from ({}) must be before to ({})",
                query.from_ms, query.to_ms
            )));
        }
        let plan = plan::plan(store, &query);
        let writer = match format {
            Format::Csv => Writer::Csv(csv::CsvWriter::new(out)?),
            Format::Parquet => Writer::Parquet(Box::new(parquet::ParquetWriter::with_row_group(out, group_rows)?)),
        };
        let progress = Progress {
            series_done: 0,
            series_total: plan.len(),
            readings: 0,
            readings_estimate: plan.iter().map(|p| p.estimate).sum(),
        };
        Ok(Export { store: store.clone(), resume_ms: query.from_ms, query, plan, writer, progress })
    }

    /// Writes up to `max_rows` more rows (at least one page when any is left); `false` once
    /// every series is written (then [`Export::finish`]).
    pub fn step(&mut self, max_rows: usize) -> Result<bool, ExportError> {
        let mut written = 0;
        while written < max_rows.max(1) {
            let Some(series) = self.plan.get(self.progress.series_done) else {
                return Ok(false);
            };
            let want = (max_rows.max(1) - written).min(PAGE_POINTS);
            let page = self.store.points(&series.device, &series.metric, self.resume_ms, self.query.to_ms, want)?;
            // A series removed since the plan was made has nothing more to give.
            let page = page.unwrap_or_default();
            match &mut self.writer {
                Writer::Csv(w) => w.write(series, &page)?,
                Writer::Parquet(w) => w.write(series, &page)?,
            }
            written += page.len();
            self.progress.readings += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == want && last.time_ms < i64::MAX => self.resume_ms = last.time_ms + 1,
                _ => {
                    self.progress.series_done += 1;
                    self.resume_ms = self.query.from_ms;
                }
            }
        }
        Ok(self.progress.series_done < self.plan.len())
    }

    /// How far it has come.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Writes what is left (Parquet's last row group and footer) and hands back the output.
    pub fn finish(self) -> Result<(W, Progress), ExportError> {
        let out = match self.writer {
            Writer::Csv(w) => w.finish()?,
            Writer::Parquet(w) => w.finish()?,
        };
        Ok((out, self.progress))
    }
}

impl Export<Vec<u8>> {
    /// The bytes written since the last call, taken out of the output (a Parquet file's
    /// bytes come a row group at a time; its footer only with [`Export::finish`]).
    pub fn take_output(&mut self) -> Result<Vec<u8>, ExportError> {
        let out = match &mut self.writer {
            Writer::Csv(w) => w.get_mut(),
            Writer::Parquet(w) => w.get_mut()?,
        };
        Ok(std::mem::take(out))
    }
}

/// Runs a whole export of `query` to `out`, calling `on_step` after every step of at most
/// [`PAGE_POINTS`] rows; hands back the output and the final progress.
pub fn run<W: Write + Send>(
    store: &Store,
    query: Query,
    format: Format,
    out: W,
    mut on_step: impl FnMut(&Progress),
) -> Result<(W, Progress), ExportError> {
    let mut export = Export::start(store, query, format, out)?;
    while export.step(PAGE_POINTS)? {
        on_step(&export.progress());
    }
    on_step(&export.progress());
    export.finish()
}
