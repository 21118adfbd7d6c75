//! mekong's time-series store, on sled, in the platform's own process.
//!
//! A series is one (device, metric) pair. Everything but the folded hours (in day files, see
//! below) lives in one sled tree so that a write (the points of a group of packs, the series
//! they extend, the devices that sent them) is one atomic batch; the key spaces share it,
//! told apart by their first byte:
//!
//! | key | value |
//! |---|---|
//! | `0x01`, series id (u32 BE), first time in ms (i64 BE, sign bit flipped), chunk id (u64 BE) | a chunk of points ([`chunk`]) |
//! | `0x02`, device id, `0x00`, metric | series metadata ([`codec`]), format 6 and before |
//! | `0x03`, device id | the device's entry: its metadata and all its series' metadata (format 7) |
//! | `0x04`, series id (u32 BE), UTC day start (i64 BE, sign bit flipped) | the rollups of the day's folded hours, one entry per day ([`rollup`]) |
//! | `0x05`, device id | the highest sequence number stored with the device's packs (u64 BE), then the 8-byte id of its numbering |
//! | `0x06`, space, `0x00`, key | a record of another crate's ([`Store::write_records`]): the alert engine's states, history, outboxes and rules |
//! | `0x07`, UTC day start (i64 BE, sign bit flipped) | the generation (u64 BE) of the day's file, `blocks/<YYYY-MM-DD>.<generation>.mkb` (`dayfile.rs`) |
//! | `0x08`, record number (u64 BE) | a write group not yet folded into the keys above (format 8): the chunks, device entries, sequence numbers and next series id it stands for (`store/log.rs`) |
//! | `0x00format`, `0x00epoch`, `0x00series` | the layout version; the number of openings (high bits of chunk ids); the next series id |
//!
//! A write group is logged as one record (`0x08`) and folded into the other key spaces by the
//! store's own thread every few seconds, many groups at once: a device's packs since the last
//! fold become one chunk per series and hour and one entry. Reads take the unfolded chunks
//! from memory with the tree's.
//!
//! Points are written in chunks: per write group, one chunk per series and hour window. sled
//! copies a leaf on every insert, so this costs one insert for many points instead of one per
//! point. Flipping the sign bit makes the byte order of a time equal to its numeric order, so
//! the chunks of one series that can hold points in `[from, to)` are one ordered range scan.
//! Writing a point whose (series, time) already exists changes nothing: the first value
//! stays, so a device that resends after a lost acknowledgement creates no duplicates.
//!
//! Once an hour window has closed, the upkeep pass ([`Store::fold`]) moves its chunks, of
//! every series, into its UTC day's file outside sled: one immutable, checksummed file per
//! day holding one block per series, written anew (and renamed over the last) as hours close,
//! and named in sled in the batch that deletes the chunks it absorbed and writes the hours'
//! rollups (count, min, max, sum, first, last). A late point into a folded window is a chunk
//! in sled, read together with the day's file, and moves the series' folded mark back until
//! the next pass folds it into the file. Aggregates by whole hours read rollups below the mark
//! and points elsewhere, so they always equal a computation over the points. Retention
//! ([`Store::expire`]) deletes day files (or rewrites them without the expired series), and
//! later the rollups. So sled, which never shrinks its file by itself, holds only what
//! changes, and the data directory follows the data; [`compact`] still copies sled's live
//! entries into a fresh directory.
//!
//! A write or flush that fails (a full disk) leaves sled failing every later one, so the store
//! never writes to that opening again: it reports [`Health::Failing`], answers writes with
//! [`StoreError::Unavailable`], and at a write after a short back-off opens the database
//! afresh, a new [`Generation`], reloading its metadata from disk. Writes are durable once a
//! flush of their own generation returns. The store's verdict on a pack ([`PackRefused`]) is
//! a type apart from its failures, so that callers never take one for the other.
//!
//! Metadata (first and last time, count, latest value) is kept in memory as well, rebuilt from
//! the tree at open, so that listing devices, series and latest values never scans points.
//!
//! The store knows nothing of MQTT, HTTP, SenML or COSE: it takes device ids, metric names,
//! units, times in milliseconds and `f64` values, and keeps one number per device (a sequence
//! number, written in the same batch as the pack that carried it) for its callers.
#![warn(missing_docs)]

mod chunk;
mod civil;
mod codec;
mod dayfile;
mod error;
mod huffman;
mod keys;
mod rans;
mod rollup;
mod store;
mod types;
mod varint;

/// The decoders of what the store reads back from disk, for the fuzz targets in `fuzz/`
/// and `mekong-bench day-blocks` (feature `fuzzing`): they are private to the crate
/// otherwise, and those are the only callers that need them on their own.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::chunk::{
        count as chunk_count, decode_into as decode_chunk, encode as encode_chunk, encode_block, encode_block_v5,
    };
    pub use crate::rollup::{decode as decode_rollup, encode as encode_rollup};
    pub use crate::store::{
        decode_record as decode_log_record, encode_record as encode_log_record, MAX_PIECE_BYTES as LOG_PIECE_BYTES,
    };
}

pub use civil::civil_date;
pub use error::{PackRefused, StoreError, WriteError};
pub use store::{
    backup, compact, compact_with_progress, CompactReport, ExpireReport, FoldReport, LogFold, Record, Removed,
    RetentionPolicy, RetentionRule, Store, StoreOptions,
};
pub use types::{
    Bucket, DeviceInfo, DeviceTally, DiskSpace, Flushed, Generation, GroupRecord, Health, LatestValue, NewPoint,
    PackWrite, Point, RecordWrite, RefusalWrite, SeriesInfo, ValueKind, WriteSummary, Written,
};

/// A xorshift generator for the crate's randomized tests: the same data at every run.
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
