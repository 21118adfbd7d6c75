//! A sequence number that only ever grows, across reboots and power cuts.
//!
//! Signed packs carry it, so the platform can refuse a replayed pack; a number must never be
//! used twice, even if power fails at the worst moment. Writing flash for every pack would
//! wear it out (a pack a minute is half a million writes a year), so the counter reserves
//! numbers in blocks: at boot it reads the last persisted limit `L`, persists `L + block`
//! and hands out `L, L+1, ...`; reaching the limit persists the next one first. A reboot
//! skips at most `block` numbers, which is harmless: only growth matters.
//!
//! [`SeqStore`] is where the limit lives. [`FlashJournal`] keeps it in two flash pages as an
//! append-only journal (flash bits only go from 1 to 0 without an erase): the limit is the
//! largest entry of either page, and a page is erased only when the other holds a newer
//! entry, so an erase cut short by a power failure never loses the limit. [`RamStore`] keeps
//! it in RAM, which is only right for a simulator (QEMU): it forgets everything at reset.

use embedded_storage::nor_flash::NorFlash;

/// Where the reserved limit is kept.
pub trait SeqStore {
    /// The store's error.
    type Error: core::fmt::Debug;
    /// The last limit stored, or `None` on a node that never stored one.
    fn load(&mut self) -> Result<Option<u64>, Self::Error>;
    /// Stores a new limit, larger than every earlier one. Returns once it is durable.
    fn store(&mut self, limit: u64) -> Result<(), Self::Error>;
}

/// Hands out sequence numbers.
#[derive(Debug)]
pub struct Sequencer<S> {
    store: S,
    next: u64,
    limit: u64,
    block: u64,
}

impl<S: SeqStore> Sequencer<S> {
    /// Opens the counter at boot, reserving the first block.
    pub fn open(mut store: S, block: u64) -> Result<Self, S::Error> {
        let block = block.max(1);
        let next = store.load()?.unwrap_or(0);
        let limit = next.saturating_add(block);
        store.store(limit)?;
        Ok(Self { store, next, limit, block })
    }

    /// The next number; persists a new block first when this one is used up.
    pub fn take(&mut self) -> Result<u64, S::Error> {
        if self.next >= self.limit {
            let limit = self.next.saturating_add(self.block);
            self.store.store(limit)?;
            self.limit = limit;
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }

    /// The store (for tests and diagnostics).
    pub fn store(&self) -> &S {
        &self.store
    }
}

/// The limit in RAM: for QEMU only, where flash is not persistent anyway.
#[derive(Debug, Default, Clone, Copy)]
pub struct RamStore(pub Option<u64>);

impl SeqStore for RamStore {
    type Error = core::convert::Infallible;
    fn load(&mut self) -> Result<Option<u64>, Self::Error> {
        Ok(self.0)
    }
    fn store(&mut self, limit: u64) -> Result<(), Self::Error> {
        self.0 = Some(limit);
        Ok(())
    }
}

const ENTRY: usize = 8;
const ERASED: u64 = u64::MAX;

/// The limit as an append-only journal of 8-byte entries in two flash pages.
#[derive(Debug)]
pub struct FlashJournal<F> {
    flash: F,
    /// Offsets of the two pages in `flash`, each `page` bytes, erase-aligned.
    pages: [u32; 2],
    page: u32,
}

impl<F: NorFlash> FlashJournal<F> {
    /// A journal over two erase pages of `flash`, at `pages[0]` and `pages[1]`.
    pub fn new(flash: F, pages: [u32; 2], page: u32) -> Self {
        Self { flash, pages, page }
    }

    /// The flash (for tests).
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// Largest entry of a page and the offset of its first erased slot (`None` when full).
    fn scan(&mut self, which: usize) -> Result<(Option<u64>, Option<u32>), F::Error> {
        let mut max = None;
        let mut off = 0;
        while off < self.page {
            let mut b = [0u8; ENTRY];
            self.flash.read(self.pages[which] + off, &mut b)?;
            let v = u64::from_le_bytes(b);
            if v == ERASED {
                return Ok((max, Some(off)));
            }
            max = max.max(Some(v));
            off += ENTRY as u32;
        }
        Ok((max, None))
    }
}

impl<F: NorFlash> SeqStore for FlashJournal<F> {
    type Error = F::Error;

    fn load(&mut self) -> Result<Option<u64>, F::Error> {
        Ok(self.scan(0)?.0.max(self.scan(1)?.0))
    }

    fn store(&mut self, limit: u64) -> Result<(), F::Error> {
        let (a, b) = (self.scan(0)?, self.scan(1)?);
        // Append to the page holding the newest entry; when it is full, erase the other and
        // move there (the full page keeps the limit until the new entry is written).
        let current = if b.0 > a.0 { 1 } else { 0 };
        let slot = [a, b][current].1;
        let (which, off) = match slot {
            Some(off) => (current, off),
            None => {
                let other = 1 - current;
                let start = self.pages[other];
                self.flash.erase(start, start + self.page)?;
                (other, 0)
            }
        };
        self.flash.write(self.pages[which] + off, &limit.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_storage::nor_flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash};

    /// NOR flash in RAM that, like the real thing, can only clear bits between erases.
    struct Nor {
        mem: std::vec::Vec<u8>,
        erases: u32,
    }
    #[derive(Debug)]
    struct SetBit;
    impl NorFlashError for SetBit {
        fn kind(&self) -> NorFlashErrorKind {
            NorFlashErrorKind::Other
        }
    }
    impl ErrorType for Nor {
        type Error = SetBit;
    }
    impl ReadNorFlash for Nor {
        const READ_SIZE: usize = 1;
        fn read(&mut self, off: u32, bytes: &mut [u8]) -> Result<(), SetBit> {
            bytes.copy_from_slice(&self.mem[off as usize..off as usize + bytes.len()]);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.mem.len()
        }
    }
    impl NorFlash for Nor {
        const WRITE_SIZE: usize = 8;
        const ERASE_SIZE: usize = 64;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), SetBit> {
            self.mem[from as usize..to as usize].fill(0xFF);
            self.erases += 1;
            Ok(())
        }
        fn write(&mut self, off: u32, bytes: &[u8]) -> Result<(), SetBit> {
            for (m, b) in self.mem[off as usize..].iter_mut().zip(bytes) {
                if b & !*m != 0 {
                    return Err(SetBit);
                }
                *m &= b;
            }
            Ok(())
        }
    }

    fn journal(mem: std::vec::Vec<u8>) -> FlashJournal<Nor> {
        FlashJournal::new(Nor { mem, erases: 0 }, [0, 64], 64)
    }

    #[test]
    fn numbers_grow_across_reboots_and_page_switches() {
        let mut mem = std::vec![0xFFu8; 128];
        let mut last = None;
        // 40 boots, 7 packs each: 40 stores of the boot block plus the refills, far more
        // entries than the 2 × 8 slots, so the journal wraps many times.
        for _ in 0..40 {
            let mut seq = Sequencer::open(journal(mem.clone()), 4).unwrap();
            for _ in 0..7 {
                let n = seq.take().unwrap();
                assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
                last = Some(n);
            }
            mem = seq.store().flash().mem.clone();
        }
    }

    #[test]
    fn a_power_cut_during_an_erase_keeps_the_limit() {
        let mut j = journal(std::vec![0xFFu8; 128]);
        for limit in 1..=8u64 {
            j.store(limit * 10).unwrap(); // fills page 0
        }
        // The next store erases page 1 first; if power fails right after that erase, page 0
        // still holds 80.
        j.flash.erase(64, 128).unwrap();
        assert_eq!(j.load().unwrap(), Some(80));
        j.store(90).unwrap();
        assert_eq!(j.load().unwrap(), Some(90));
    }

    #[test]
    fn ram_store_for_the_simulator() {
        let mut seq = Sequencer::open(RamStore::default(), 16).unwrap();
        assert_eq!((seq.take().unwrap(), seq.take().unwrap()), (0, 1));
        assert_eq!(seq.store().0, Some(16));
    }
}
