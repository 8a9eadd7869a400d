//! The allocator of a plugin built for `wasm32-unknown-unknown` (the lean build of the pure
//! worlds): an arena over the instance's linear memory.
//!
//! The host runs every call in a fresh instance, so nothing allocated outlives the call: an
//! allocation moves a pointer forward, a free gives the memory back only when it was the last
//! allocation (which is what growing a `String` or a `Vec` does), and the memory the call used
//! is discarded with the instance. It starts in the free part of the initial memory (the module
//! is linked with room for it), so a short call never grows the memory, which would cost the
//! host an `mprotect` now and at the next instantiation.
//!
//! A call that allocates more than its memory allows fails as out of memory, as any plugin does
//! at its memory limit.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;
use core::ptr;

const PAGE: usize = 64 * 1024;

pub struct Arena {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a wasm32-unknown-unknown instance has one thread.
unsafe impl Sync for Arena {}

unsafe extern "C" {
    /// The first byte after the data and the stack, set by the linker.
    static __heap_base: u8;
}

impl Arena {
    pub const fn new() -> Arena {
        Arena {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// Makes `[.. end)` at least `wanted` bytes long, growing the memory when needed.
    fn reserve(&self, wanted: usize) -> bool {
        if wanted <= self.end.get() {
            return true;
        }
        let pages = (wanted - self.end.get()).div_ceil(PAGE);
        if wasm32::memory_grow(0, pages) == usize::MAX {
            return false;
        }
        self.end.set(self.end.get() + pages * PAGE);
        true
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.next.get() == 0 {
            self.next.set(ptr::addr_of!(__heap_base) as usize);
            self.end.set(wasm32::memory_size(0) * PAGE);
        }
        let start = (self.next.get() + layout.align() - 1) & !(layout.align() - 1);
        let Some(stop) = start.checked_add(layout.size()) else {
            return ptr::null_mut();
        };
        if !self.reserve(stop) {
            return ptr::null_mut();
        }
        self.next.set(stop);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The last allocation grows or shrinks in place.
        if ptr as usize + layout.size() == self.next.get() {
            let Some(stop) = (ptr as usize).checked_add(new_size) else {
                return ptr::null_mut();
            };
            if !self.reserve(stop) {
                return ptr::null_mut();
            }
            self.next.set(stop);
            return ptr;
        }
        // SAFETY: as `GlobalAlloc::realloc` requires of its caller.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}
