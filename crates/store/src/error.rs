//! What can go wrong: the store's failures, and its verdict on a pack, kept apart.

use std::time::SystemTime;

use crate::store::FORMAT_VERSION;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, or a corrupt database).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A metadata entry in the tree cannot be read.
    #[error("corrupt metadata under key {0:02x?}")]
    Corrupt(Vec<u8>),
    /// The store cannot write: a write or flush failed (a full disk, an I/O error), and the
    /// database has not been opened again yet. Nothing written since the last successful
    /// flush is durable; the store opens the database afresh at the next write once
    /// [`Store::health`]'s back-off has passed.
    #[error("store cannot write: {cause}")]
    Unavailable {
        /// When the failure began.
        since: SystemTime,
        /// The error that began it.
        cause: String,
    },
    /// A day file (a closed day's blocks) is missing, truncated or fails its checksum. Nothing
    /// is read from it; the file is left as it is for the operator to restore from a backup.
    #[error("day file {file:?}: {reason}")]
    DayFile {
        /// The file.
        file: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A record space name is empty or holds a NUL byte ([`crate::RecordWrite`]).
    #[error("bad record space name {0:?}")]
    RecordSpace(String),
    /// Every series id is taken.
    #[error("no series ids left")]
    SeriesIdsExhausted,
    /// A file of the data directory cannot be read or moved.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// A compaction stopped between moving the old directory away and the new one in.
    #[error(
        "an interrupted compaction left the data in {old:?} (old) and {compacted:?} (compacted): run the compaction \
         again to finish it, or move {old:?} back"
    )]
    InterruptedCompaction {
        /// The directory before compaction.
        old: std::path::PathBuf,
        /// The compacted copy.
        compacted: std::path::PathBuf,
    },
    /// Another process (or another `Store` of this one) has the data directory open.
    #[error("the data directory {0:?} is in use by another process: stop the mekong that serves it first")]
    Locked(std::path::PathBuf),
    /// Moving the store to this version's format failed before anything in it changed: the
    /// files written so far were deleted, sled's entries are as the older version left them.
    #[error(
        "moving the store from format {from} to format {FORMAT_VERSION} failed, and the store is left as it was \
         (format {from}, nothing in it changed: the mekong that wrote it still opens it)"
    )]
    Migration {
        /// The format the store is still in.
        from: u8,
        /// Why the migration failed.
        #[source]
        source: Box<StoreError>,
    },
    /// The data directory holds another store format.
    #[error("the data directory holds store format {0:?}, this mekong reads format {FORMAT_VERSION}")]
    Format(Option<Vec<u8>>),
}

/// The store's verdict on one pack of a [`Store::write_packs`]: the pack itself cannot be
/// stored, whatever the state of the disk. A failure to write is a [`StoreError`] instead,
/// so that a caller cannot mistake the platform's trouble for the pack's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackRefused {
    /// A point's unit differs from the unit of its series.
    #[error("series {metric} is in {expected}, not {got}")]
    UnitMismatch {
        /// The metric.
        metric: String,
        /// The series' unit.
        expected: String,
        /// The point's unit.
        got: String,
    },
    /// A point's value kind (number or boolean) differs from that of its series.
    #[error("series {metric} holds {expected}s, not {got}s")]
    ValueKindMismatch {
        /// The metric.
        metric: String,
        /// The series' kind: `number` or `boolean`.
        expected: &'static str,
        /// The point's.
        got: &'static str,
    },
}

impl PackRefused {
    /// The label it is counted under in its device's tally ([`crate::DeviceTally`]); the
    /// same as the wire contract's reason kind (ingest's tests check that they agree).
    pub fn label(&self) -> &'static str {
        match self {
            PackRefused::UnitMismatch { .. } => "unit_mismatch",
            // A boolean reading for a number series (or the reverse) breaks the same promise
            // as a wrong unit: the series reads as one thing.
            PackRefused::ValueKindMismatch { .. } => "unit_mismatch",
        }
    }
}

/// Why [`Store::write`] stored nothing: the one pack was refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The pack cannot be stored.
    #[error(transparent)]
    Refused(#[from] PackRefused),
    /// The store cannot write.
    #[error(transparent)]
    Store(#[from] StoreError),
}
