//! A backup's manifest (`backups/<id>/manifest.json`): what the backup holds, so that it can be
//! checked and restored on its own. A file format of the repository, not an API type: it is
//! read back only by this module.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BackupError;

/// The manifest format this version writes and reads.
pub(super) const FORMAT: u32 = 1;

/// The manifest's file name in a backup's directory.
pub(super) const FILE: &str = "manifest.json";

/// The sled part's file name in a backup's directory.
pub(super) const SLED: &str = "sled.entries";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Manifest {
    pub(super) format: u32,
    pub(super) id: String,
    /// When the backup was taken (ms since the epoch, UTC): its point, the moment the store's
    /// writes were held to read the sled part.
    pub(super) point_ms: i64,
    /// The store's format (`FORMAT_VERSION`) at the point.
    pub(super) store_format: u8,
    pub(super) sled: SledPart,
    pub(super) files: Vec<DayFile>,
    pub(super) series: Vec<SeriesCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SledPart {
    pub(super) bytes: u64,
    pub(super) sha256: String,
    pub(super) entries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DayFile {
    /// Its name in the store's `blocks/`.
    pub(super) name: String,
    /// Its name in the repository's `files/`: the store's name and its content's hash, so that
    /// two contents never share a name (a day's generations start at 1 again once retention
    /// has emptied it, and two stores may share a repository).
    pub(super) stored: String,
    pub(super) bytes: u64,
    pub(super) sha256: String,
    /// The store file's length and modification time when it was copied: an incremental
    /// backup takes a file whose stamp is unchanged as already in the repository (day files
    /// are never written in place).
    pub(super) stamp: Option<Stamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Stamp {
    pub(super) len: u64,
    pub(super) modified_ns: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeriesCount {
    pub(super) device: String,
    pub(super) metric: String,
    pub(super) id: u32,
    pub(super) count: u64,
}

impl Manifest {
    pub(super) fn read(path: &Path) -> Result<Manifest, BackupError> {
        let bytes = std::fs::read(path).map_err(|e| BackupError::io(path, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| BackupError::Damaged { path: path.to_owned(), reason: e.to_string() })?;
        if manifest.format != FORMAT {
            return Err(BackupError::Damaged {
                path: path.to_owned(),
                reason: format!("manifest format {} (this mekong reads {FORMAT})", manifest.format),
            });
        }
        Ok(manifest)
    }

    pub(super) fn readings(&self) -> u64 {
        self.series.iter().map(|s| s.count).sum()
    }

    pub(super) fn bytes(&self) -> u64 {
        self.sled.bytes + self.files.iter().map(|f| f.bytes).sum::<u64>()
    }
}
