//! What every board image needs from cortex-m-rt's memory layout, written once: the peak of
//! the stack, the config page that `memory.x` reserves, and stopping for good.
//!
//! The boards differ in peripherals, never in these. Their link step is shared too:
//! `boards/build.rs`, named by each board's `Cargo.toml`.
//!
//! The node's logic stays in `mekong-node`, which builds and tests on the host; this crate
//! only links into a Cortex-M image, as it reads linker symbols.
#![no_std]
#![warn(missing_docs)]

extern "C" {
    /// End of the statics (cortex-m-rt): the stack may grow down to here.
    static __sheap: u32;
    /// Top of the stack (cortex-m-rt).
    static _stack_start: u32;
    /// First byte of the config page (the board's `memory.x`).
    static _config_start: u8;
    /// One past the config page's last byte (the board's `memory.x`).
    static _config_end: u8;
}

/// The deepest the stack has been since reset, in bytes.
///
/// cortex-m-rt's `paint-stack` (enabled by this crate) fills the stack with
/// `STACK_PAINT_VALUE` before `main`; the first word from the bottom that no longer holds it
/// marks the deepest frame so far. A frame that happened to store that very word at its
/// lowest address would be missed, so the figure can be short by a word's worth of luck.
pub fn stack_peak() -> usize {
    // SAFETY: [__sheap, _stack_start) is RAM (the stack region cortex-m-rt lays out), word
    // aligned (link.x asserts both ends); volatile reads of it alias nothing we hold a
    // reference to.
    unsafe {
        let top = core::ptr::addr_of!(_stack_start) as usize;
        let mut p = core::ptr::addr_of!(__sheap) as usize;
        while p < top && core::ptr::read_volatile(p as *const u32) == cortex_m_rt::STACK_PAINT_VALUE {
            p += 4;
        }
        top - p
    }
}

/// The config page (the provisioning blob), through the linker symbols of the board's
/// `memory.x`.
///
/// Sound as long as no code in the image writes that page: a board that drives the flash
/// controller gives it only other pages (the nRF52840's NVMC gets the sequence journal's).
pub fn config_page() -> &'static [u8] {
    // SAFETY: memory.x reserves [_config_start, _config_end) in flash for the config page
    // and nothing in the image writes it (see above), so a shared slice over it for the
    // life of the program is sound.
    unsafe {
        let start = core::ptr::addr_of!(_config_start);
        let len = (core::ptr::addr_of!(_config_end) as usize).saturating_sub(start as usize);
        core::slice::from_raw_parts(start, len)
    }
}

/// Stops for good, sleeping rather than spinning, after the console has said why.
pub fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}
