//! The sled part of a backup as a file of its own: every entry of the store's tree at the
//! backup's point, in key order, with a checksum over the whole.
//!
//! Layout: `MKSLED` `\0` `\x01`, then per entry its key's and value's lengths (u32 BE each) and
//! bytes, then a footer of the entry count (u64 BE), the CRC-32 of everything before the footer
//! (u32 BE) and `MKSLEND\0`. The file is read whole: it holds only what sled holds (the open
//! hour's chunks, late points, metadata and rollups), never the day files.

use std::io::Write;

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"MKSLED\x00\x01";
const END: &[u8; 8] = b"MKSLEND\x00";
const FOOTER: usize = 8 + 4 + 8;

/// A key and its value.
pub(super) type Entry = (Vec<u8>, Vec<u8>);

/// What [`write`] wrote.
pub(super) struct Written {
    pub(super) bytes: u64,
    pub(super) sha256: String,
}

/// A writer that hashes (SHA-256, for the manifest) and checksums (CRC-32, for the file's
/// own footer) what goes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, bytes: &[u8], crc: bool) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.sha.update(bytes);
        if crc {
            self.crc.update(bytes);
        }
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Writes `entries` to `out`.
pub(super) fn write<W: Write, K: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: W,
    entries: &[(K, V)],
) -> std::io::Result<(Written, W)> {
    let mut w = Hashing { inner: out, sha: Sha256::new(), crc: crc32fast::Hasher::new(), bytes: 0 };
    w.put(MAGIC, true)?;
    for (key, value) in entries {
        let (key, value) = (key.as_ref(), value.as_ref());
        let too_long = || std::io::Error::other("a sled entry longer than 4 GiB");
        w.put(&u32::try_from(key.len()).map_err(|_| too_long())?.to_be_bytes(), true)?;
        w.put(&u32::try_from(value.len()).map_err(|_| too_long())?.to_be_bytes(), true)?;
        w.put(key, true)?;
        w.put(value, true)?;
    }
    let crc = w.crc.clone().finalize();
    w.put(&(entries.len() as u64).to_be_bytes(), false)?;
    w.put(&crc.to_be_bytes(), false)?;
    w.put(END, false)?;
    let sha256 = hex(&w.sha.finalize());
    Ok((Written { bytes: w.bytes, sha256 }, w.inner))
}

/// The entries of a file [`write`] wrote; the error says what is wrong with it.
pub(super) fn read(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    if bytes.len() < MAGIC.len() + FOOTER {
        return Err(format!("truncated: {} bytes", bytes.len()));
    }
    let (body, footer) = bytes.split_at(bytes.len() - FOOTER);
    if &footer[12..] != END {
        return Err("no end marker: truncated or not the sled part of a backup".into());
    }
    let count = u64::from_be_bytes(footer[..8].try_into().map_err(|_| "footer")?);
    let crc = u32::from_be_bytes(footer[8..12].try_into().map_err(|_| "footer")?);
    if crc32fast::hash(body) != crc {
        return Err("checksum does not match".into());
    }
    if &body[..MAGIC.len()] != MAGIC {
        return Err("not the sled part of a backup of this version".into());
    }
    let mut at = MAGIC.len();
    let mut take = |n: usize| -> Result<&[u8], String> {
        let piece = body.get(at..at + n).ok_or_else(|| format!("entry runs past the end at byte {at}"))?;
        at += n;
        Ok(piece)
    };
    let mut entries = Vec::new();
    while (entries.len() as u64) < count {
        let key_len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| "length")?) as usize;
        let value_len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| "length")?) as usize;
        let key = take(key_len)?.to_vec();
        let value = take(value_len)?.to_vec();
        entries.push((key, value));
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last of {count} entries", body.len() - at));
    }
    Ok(entries)
}

/// Lower-case hexadecimal.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_round_trip_and_any_damage_is_found() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> =
            vec![(b"\x00format".to_vec(), vec![6]), (vec![1; 21], vec![9; 300]), (vec![2], vec![])];
        let (written, bytes) = write(Vec::new(), &entries).unwrap();
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.sha256, hex(&Sha256::digest(&bytes)));
        assert_eq!(read(&bytes).unwrap(), entries);
        for cut in 0..bytes.len() {
            assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x04;
            assert!(read(&bad).is_err(), "flip at {at} went unnoticed");
        }
    }
}
