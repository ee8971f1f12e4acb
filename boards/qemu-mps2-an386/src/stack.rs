//! Peak stack use, measured by painting: fill the free RAM between the end of static data
//! and the current stack pointer with a pattern, run the work, then find the deepest word the
//! stack overwrote. Its `unsafe` is raw RAM access.

const PATTERN: u32 = 0xDEAD_BEEF;
/// Left unpainted below the stack pointer, for this function's own frame.
const MARGIN: usize = 256;

extern "C" {
    // Provided by cortex-m-rt's link.x: end of .bss/.data (start of free RAM), top of stack.
    static mut __sheap: u32;
    static _stack_start: u32;
}

fn bounds() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken, never their contents.
    (
        core::ptr::addr_of_mut!(__sheap) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    )
}

/// Paints the free RAM below the stack. Call first thing in `main`.
pub fn paint() {
    let (start, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = start;
    while p + 4 <= sp - MARGIN {
        // SAFETY: [start, sp - MARGIN) is RAM that no live object uses: above all statics and
        // below the deepest frame so far.
        unsafe { core::ptr::write_volatile(p as *mut u32, PATTERN) };
        p += 4;
    }
}

/// Bytes of stack used at the deepest point since [`paint`].
pub fn peak() -> usize {
    let (start, top) = bounds();
    let mut p = start;
    // SAFETY: reads words of RAM between the end of statics and the stack top.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PATTERN {
        p += 4;
    }
    top - p
}
