//! Day files: the immutable, checksummed file that holds one closed UTC day of every series.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! header  "MKDAYBLK" | version u8 | day start in ms i64
//! blocks  the day block of each series (the bytes `chunk::encode_block` makes), back to back
//! index   per series, ascending by id: series u32 | offset u64 | length u32 | crc32 of the block u32
//! footer  index offset u64 | series count u32 | crc32 of header and index u32 | "MKDE"
//! ```
//!
//! A reader checks the footer, the header and the index (their checksum, and that every block
//! lies between the header and the index) when it opens the file, and a block's own checksum
//! when it reads it; a file that fails either is reported, never read as if it held less. The
//! store never changes a day file: it writes a new one and renames it over (see
//! `store/days.rs`).

use std::fs::File;
use std::os::unix::fs::FileExt;

const MAGIC: &[u8; 8] = b"MKDAYBLK";
const END: &[u8; 4] = b"MKDE";
const VERSION: u8 = 1;
const HEADER: usize = 8 + 1 + 8;
const ENTRY: usize = 4 + 8 + 4 + 4;
const FOOTER: usize = 8 + 4 + 4 + 4;

/// Where one series' block is in a day file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The series id.
    pub series: u32,
    /// Byte offset of the block.
    pub offset: u64,
    /// Its length.
    pub len: u32,
    /// crc32 of its bytes.
    pub crc: u32,
}

/// The index of a day file: the blocks it holds, by series id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Start of the day, in ms.
    pub day_ms: i64,
    /// Sorted by series id, each id once.
    pub entries: Vec<Entry>,
}

impl Index {
    /// The entry of series `id`.
    pub fn get(&self, id: u32) -> Option<&Entry> {
        self.entries.binary_search_by_key(&id, |e| e.series).ok().map(|i| &self.entries[i])
    }
}

/// The bytes of the day file of day `day_ms` holding `blocks` (series id, block), which must
/// be sorted by series id, each once.
pub fn encode(day_ms: i64, blocks: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let body: usize = blocks.iter().map(|b| b.1.len()).sum();
    let mut out = Vec::with_capacity(HEADER + body + blocks.len() * ENTRY + FOOTER);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&day_ms.to_be_bytes());
    let mut index = Vec::with_capacity(blocks.len() * ENTRY);
    for (series, block) in blocks {
        index.extend_from_slice(&series.to_be_bytes());
        index.extend_from_slice(&(out.len() as u64).to_be_bytes());
        index.extend_from_slice(&(block.len() as u32).to_be_bytes());
        index.extend_from_slice(&crc32fast::hash(block).to_be_bytes());
        out.extend_from_slice(block);
    }
    let index_offset = out.len() as u64;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..HEADER]);
    crc.update(&index);
    out.extend_from_slice(&index);
    out.extend_from_slice(&index_offset.to_be_bytes());
    out.extend_from_slice(&(blocks.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.extend_from_slice(END);
    out
}

fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).map_err(|e| format!("cannot read {len} bytes at {offset}: {e}"))?;
    Ok(buf)
}

fn be<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(b) = bytes.get(at..at + N) {
        out.copy_from_slice(b);
    }
    out
}

/// Reads and checks the index of the day file `file`, `len` bytes long; the error says what is
/// wrong with it.
pub fn read_index(file: &File, len: u64) -> Result<Index, String> {
    if len < (HEADER + FOOTER) as u64 {
        return Err(format!("truncated: {len} bytes"));
    }
    let footer = read_at(file, len - FOOTER as u64, FOOTER)?;
    if &footer[16..] != END {
        return Err("no end marker: truncated or not a day file".into());
    }
    let index_offset = u64::from_be_bytes(be(&footer, 0));
    let count = u32::from_be_bytes(be(&footer, 8)) as u64;
    let crc = u32::from_be_bytes(be(&footer, 12));
    let index_len = count * ENTRY as u64;
    if index_offset < HEADER as u64 || index_offset.checked_add(index_len) != Some(len - FOOTER as u64) {
        return Err(format!("index at {index_offset} of {count} series does not fit a file of {len} bytes"));
    }
    let header = read_at(file, 0, HEADER)?;
    let index = read_at(file, index_offset, index_len as usize)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&index);
    if hasher.finalize() != crc {
        return Err("checksum of header and index does not match".into());
    }
    if &header[..8] != MAGIC || header[8] != VERSION {
        return Err(format!("not a day file of version {VERSION}"));
    }
    let day_ms = i64::from_be_bytes(be(&header, 9));
    let mut entries = Vec::with_capacity(count as usize);
    for e in index.chunks_exact(ENTRY) {
        let entry = Entry {
            series: u32::from_be_bytes(be(e, 0)),
            offset: u64::from_be_bytes(be(e, 4)),
            len: u32::from_be_bytes(be(e, 12)),
            crc: u32::from_be_bytes(be(e, 16)),
        };
        let fits = entry.offset >= HEADER as u64 && entry.offset.saturating_add(u64::from(entry.len)) <= index_offset;
        let ordered = entries.last().is_none_or(|last: &Entry| last.series < entry.series);
        if !fits || !ordered {
            return Err(format!("index entry of series {} is out of place", entry.series));
        }
        entries.push(entry);
    }
    Ok(Index { day_ms, entries })
}

/// Reads the block `entry` of `file` and checks its checksum.
pub fn read_block(file: &File, entry: &Entry) -> Result<Vec<u8>, String> {
    let block = read_at(file, entry.offset, entry.len as usize)?;
    if crc32fast::hash(&block) != entry.crc {
        return Err(format!("checksum of the block of series {} does not match", entry.series));
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use super::*;

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        (f, bytes.len() as u64)
    }

    #[test]
    fn blocks_come_back_by_series() {
        let blocks = vec![(1, vec![1, 2, 3]), (7, vec![]), (9, vec![9; 1000])];
        let bytes = encode(86_400_000, &blocks);
        let (f, len) = file_of(&bytes);
        let index = read_index(f.as_file(), len).unwrap();
        assert_eq!(index.day_ms, 86_400_000);
        assert_eq!(index.entries.len(), 3);
        for (id, block) in &blocks {
            assert_eq!(&read_block(f.as_file(), index.get(*id).unwrap()).unwrap(), block);
        }
        assert!(index.get(2).is_none());
        let empty = encode(0, &[]);
        let (f, len) = file_of(&empty);
        assert!(read_index(f.as_file(), len).unwrap().entries.is_empty());
    }

    #[test]
    fn any_truncation_or_flipped_bit_is_an_error_not_a_panic() {
        let blocks = vec![(1, vec![1, 2, 3, 4]), (2, vec![5; 40])];
        let bytes = encode(0, &blocks);
        for cut in 0..bytes.len() {
            let (f, len) = file_of(&bytes[..cut]);
            assert!(read_index(f.as_file(), len).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            let (f, len) = file_of(&bad);
            let read = read_index(f.as_file(), len).and_then(|index| {
                index.entries.iter().map(|e| read_block(f.as_file(), e)).collect::<Result<Vec<_>, _>>()
            });
            assert!(read.is_err(), "bit flipped at {at} went unnoticed");
        }
    }
}
