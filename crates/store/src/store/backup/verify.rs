//! Checking a backup without restoring it: every file's size and SHA-256 against the manifest,
//! the sled part's own checksum, every block of every day file read and decoded, and the
//! readings of each series counted and compared with the manifest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;

use super::manifest::{self, Manifest};
use super::{entries, hash_file, BackupError, Repository};
use crate::store::days;
use crate::store::meta::series_in;
use crate::{chunk, dayfile, keys};

/// What [`Repository::verify`] found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The backup checked.
    pub id: String,
    /// Day files checked.
    pub files: usize,
    /// Blocks decoded (day files' blocks and sled's chunks).
    pub blocks: u64,
    /// Readings counted.
    pub readings: u64,
    /// What is wrong, each naming its file; empty if the backup is whole.
    pub problems: Vec<String>,
}

impl Repository {
    /// Checks backup `id` (the newest if `None`); a damaged backup is a report with problems,
    /// an error only when the repository cannot be read at all.
    pub fn verify(&self, id: Option<&str>) -> Result<VerifyReport, BackupError> {
        let _lock = self.lock(false)?;
        let m = self.manifest(id)?;
        Ok(self.check(&m))
    }

    pub(super) fn check(&self, m: &Manifest) -> VerifyReport {
        let mut report = VerifyReport { id: m.id.clone(), ..VerifyReport::default() };
        let dir = self.backups().join(&m.id);
        let mut counts: HashMap<u32, u64> = HashMap::new();
        let mut decoded = Vec::new();

        // The sled part: what sled names, the series, and the chunks still in sled.
        let sled_path = dir.join(manifest::SLED);
        let mut named_days = BTreeSet::new();
        let mut live: BTreeMap<u32, (String, String, u64)> = BTreeMap::new();
        match std::fs::read(&sled_path) {
            Err(e) => report.problems.push(format!("{}: {e}", sled_path.display())),
            Ok(bytes) => {
                let sha = sha(&bytes);
                if bytes.len() as u64 != m.sled.bytes || sha != m.sled.sha256 {
                    report.problems.push(format!(
                        "{}: {} bytes with SHA-256 {sha}, the manifest says {} bytes with {}",
                        sled_path.display(),
                        bytes.len(),
                        m.sled.bytes,
                        m.sled.sha256
                    ));
                }
                match entries::read(&bytes) {
                    Err(reason) => report.problems.push(format!("{}: {reason}", sled_path.display())),
                    Ok(entries) => {
                        for (key, value) in &entries {
                            let bad = |what: &str| format!("{}: {what} under key {key:02x?}", sled_path.display());
                            match key.first() {
                                Some(&keys::POINT) => {
                                    decoded.clear();
                                    match (keys::parse_chunk(key), chunk::decode_into(value, &mut decoded)) {
                                        (Some((id, _)), Some(())) => {
                                            *counts.entry(id).or_default() += decoded.len() as u64;
                                            report.blocks += 1;
                                        }
                                        _ => report.problems.push(bad("a chunk that cannot be decoded")),
                                    }
                                }
                                Some(&keys::SERIES | &keys::DEVICE) => match series_in(key, value) {
                                    Some(held) => {
                                        for (device, metric, meta) in held {
                                            live.insert(meta.id, (device, metric, meta.count));
                                        }
                                    }
                                    None => report.problems.push(bad("series metadata that cannot be read")),
                                },
                                Some(&keys::DAY_FILE) => {
                                    let generation = value.as_slice().try_into().map(u64::from_be_bytes);
                                    match (keys::parse_day_file(key), generation) {
                                        (Some(day), Ok(g)) => {
                                            named_days.insert(days::file_name(day, g));
                                        }
                                        _ => report.problems.push(bad("a day file's name that cannot be read")),
                                    }
                                }
                                _ => {}
                            }
                        }
                        if entries.len() as u64 != m.sled.entries {
                            report.problems.push(format!(
                                "{}: {} entries, the manifest says {}",
                                sled_path.display(),
                                entries.len(),
                                m.sled.entries
                            ));
                        }
                    }
                }
            }
        }

        // The day files.
        let in_manifest: BTreeSet<String> = m.files.iter().map(|f| f.name.clone()).collect();
        for missing in named_days.difference(&in_manifest) {
            report.problems.push(format!("the sled part names day file {missing}, the manifest does not list it"));
        }
        for f in &m.files {
            report.files += 1;
            let path = self.files().join(&f.stored);
            match hash_file(&path) {
                Err(e) => {
                    report.problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
                Ok((bytes, sha)) if bytes != f.bytes || sha != f.sha256 => {
                    report.problems.push(format!(
                        "{}: {bytes} bytes with SHA-256 {sha}, the manifest says {} bytes with {}",
                        path.display(),
                        f.bytes,
                        f.sha256
                    ));
                    continue;
                }
                Ok(_) => {}
            }
            let read = File::open(&path).map_err(|e| e.to_string()).and_then(|file| {
                let index = dayfile::read_index(&file, f.bytes)?;
                if days::file_name(index.day_ms, 0).split('.').next() != f.name.split('.').next() {
                    return Err(format!("holds another day than its name {} says", f.name));
                }
                let mut blocks = 0;
                for entry in &index.entries {
                    let block = dayfile::read_block(&file, entry)?;
                    decoded.clear();
                    chunk::decode_into(&block, &mut decoded)
                        .ok_or_else(|| format!("block of series {} cannot be decoded", entry.series))?;
                    if live.contains_key(&entry.series) {
                        *counts.entry(entry.series).or_default() += decoded.len() as u64;
                    }
                    blocks += 1;
                }
                Ok(blocks)
            });
            match read {
                Ok(blocks) => report.blocks += blocks,
                Err(reason) => report.problems.push(format!("{}: {reason}", path.display())),
            }
        }

        // The readings of each series: in its blocks and chunks, in its metadata, in the manifest.
        for s in &m.series {
            let found = counts.get(&s.id).copied().unwrap_or(0);
            report.readings += found;
            let meta = live.get(&s.id).map(|l| l.2);
            if found != s.count || meta.is_some_and(|c| c != s.count) {
                report.problems.push(format!(
                    "series {}/{}: {found} readings in the backup's files, the manifest says {}",
                    s.device, s.metric, s.count
                ));
            }
        }
        report
    }
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    entries::hex(&sha2::Sha256::digest(bytes))
}
