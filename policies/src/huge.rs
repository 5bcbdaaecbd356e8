//! Large zeroed buffers backed by transparent huge pages where the kernel offers them.
//!
//! The simulator's big arrays (a trace's ids, opt's next-use keys and key set) are
//! written once from start to end or read at random: in 4 KiB pages the first costs a
//! page fault per page (more time than the copy itself) and the second a TLB miss per
//! access. `MADV_HUGEPAGE` on the fresh allocation, before it is touched, asks for 2 MiB
//! pages instead. Only a hint: without THP (or off Linux) the buffer is an ordinary one.

/// Smallest buffer worth advising: below this, huge pages save nothing measurable.
const MIN_BYTES: usize = 4 << 20;

/// A vector of `n` zeros whose memory is advised to use huge pages. `vec![0; n]` of a
/// large size is a fresh zero-filled mapping not yet touched, so the advice comes in time.
pub fn zeroed_vec<T: Zero>(n: usize) -> Vec<T> {
    let v = vec![T::ZERO; n];
    advise(v.as_ptr() as usize, std::mem::size_of_val(&v[..]));
    v
}

/// Integers: the element types of the big buffers.
pub trait Zero: Copy {
    const ZERO: Self;
}

macro_rules! zero {
    ($($t:ty),*) => {$(impl Zero for $t { const ZERO: Self = 0; })*};
}
zero!(u8, u16, u32, u64);

#[allow(unused_variables)]
fn advise(addr: usize, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes < MIN_BYTES {
            return;
        }
        let start = addr.next_multiple_of(HUGE);
        let end = (addr + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside an allocation we own; MADV_HUGEPAGE changes
            // only how the kernel backs it, never its contents. Failure is harmless.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_vectors_of_every_size() {
        for n in [0usize, 1, 1000, (MIN_BYTES / 2) + 3, 3 << 20] {
            let v: Vec<u16> = zeroed_vec(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0));
        }
    }
}
