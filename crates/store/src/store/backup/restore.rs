//! Restoring a backup into an empty data directory: checked first, then its day files copied
//! into `blocks/` and its sled part written into a fresh sled database, so that the store opens
//! it as it would the original at the backup's point.

use std::path::Path;

use super::manifest::Manifest;
use super::{copy_hashing, entries, manifest, sync_dir, BackupError, Repository};
use crate::store::{days, open_db, TREE};

/// Entries written per sled batch.
const BATCH: usize = 10_000;

/// What [`Repository::restore`] did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The backup restored.
    pub id: String,
    /// Its point, ms since the epoch.
    pub point_ms: i64,
    /// Day files copied.
    pub files: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Readings restored.
    pub readings: u64,
}

impl Repository {
    /// Restores backup `id` (the newest if `None`) into `data`, which must be empty or not
    /// exist. The backup is checked whole first ([`Repository::verify`]); a damaged one
    /// restores nothing. A restore that fails leaves `data` empty again.
    pub fn restore(&self, id: Option<&str>, data: &Path) -> Result<RestoreReport, BackupError> {
        let _lock = self.lock(false)?;
        let m = self.manifest(id)?;
        if data.exists() {
            let mut contents = std::fs::read_dir(data).map_err(|e| BackupError::io(data, e))?;
            if contents.next().is_some() {
                return Err(BackupError::NotEmpty(data.to_owned()));
            }
        }
        let check = self.check(&m);
        if !check.problems.is_empty() {
            return Err(BackupError::Verify { id: m.id, problems: check.problems });
        }
        std::fs::create_dir_all(data).map_err(|e| BackupError::io(data, e))?;
        match self.write_store(&m, data) {
            Ok(bytes) => Ok(RestoreReport {
                id: m.id.clone(),
                point_ms: m.point_ms,
                files: m.files.len(),
                bytes,
                readings: m.readings(),
            }),
            Err(e) => {
                if let Ok(entries) = std::fs::read_dir(data) {
                    for entry in entries.flatten() {
                        let _ = std::fs::remove_dir_all(entry.path()).or_else(|_| std::fs::remove_file(entry.path()));
                    }
                }
                Err(e)
            }
        }
    }

    fn write_store(&self, m: &Manifest, data: &Path) -> Result<u64, BackupError> {
        let blocks = data.join(days::DIR);
        std::fs::create_dir_all(&blocks).map_err(|e| BackupError::io(&blocks, e))?;
        let mut bytes = 0;
        for f in &m.files {
            let from = self.files().join(&f.stored);
            let (n, sha) = copy_hashing(&from, &blocks.join(&f.name))?;
            if sha != f.sha256 {
                return Err(BackupError::Damaged { path: from, reason: "changed while it was restored".into() });
            }
            bytes += n;
        }
        sync_dir(&blocks)?;
        let sled_path = self.backups().join(&m.id).join(manifest::SLED);
        let raw = std::fs::read(&sled_path).map_err(|e| BackupError::io(&sled_path, e))?;
        bytes += raw.len() as u64;
        let entries = entries::read(&raw).map_err(|reason| BackupError::Damaged { path: sled_path.clone(), reason })?;
        drop(raw);
        let db = open_db(&sled::Config::new().path(data))?;
        let tree = db.open_tree(TREE).map_err(crate::StoreError::from)?;
        for group in entries.chunks(BATCH) {
            let mut batch = sled::Batch::default();
            for (key, value) in group {
                batch.insert(key.as_slice(), value.as_slice());
            }
            tree.apply_batch(batch).map_err(crate::StoreError::from)?;
        }
        db.flush().map_err(crate::StoreError::from)?;
        Ok(bytes)
    }
}
