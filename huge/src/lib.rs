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

/// A shared slice of `n` elements, element `i` being `f(i)`, called from the last
/// element to the first (as a backward pass computes them), written straight into the
/// shared allocation, which is advised like `zeroed_vec`'s. Building a vector and
/// converting it would copy it into a second allocation, faulting every page in twice.
/// Stops at the first error. (`Copy`: elements written before an error or a panic are
/// never dropped, which only `Copy` types can afford.)
pub fn shared_slice_rev<T: Copy, E>(
    n: usize,
    mut f: impl FnMut(usize) -> Result<T, E>,
) -> Result<std::sync::Arc<[T]>, E> {
    let mut a = new_shared_uninit(n);
    let s = std::sync::Arc::get_mut(&mut a).expect("just made, not shared");
    for (i, x) in s.iter_mut().enumerate().rev() {
        x.write(f(i)?);
    }
    // SAFETY: the loop wrote every element (an error returns before this).
    Ok(unsafe { a.assume_init() })
}

/// A shared copy of `src` (advised like `zeroed_vec`'s memory).
pub fn shared_copy<T: Copy>(src: &[T]) -> std::sync::Arc<[T]> {
    let mut a = new_shared_uninit(src.len());
    let s = std::sync::Arc::get_mut(&mut a).expect("just made, not shared");
    s.write_copy_of_slice(src);
    // SAFETY: every element was just written.
    unsafe { a.assume_init() }
}

/// A fresh shared slice of `n` elements, not yet written, advised before it is touched.
fn new_shared_uninit<T>(n: usize) -> std::sync::Arc<[std::mem::MaybeUninit<T>]> {
    let a = std::sync::Arc::<[T]>::new_uninit_slice(n);
    advise(a.as_ptr() as usize, std::mem::size_of_val(&a[..]));
    a
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
    // (Miri has no madvise.)
    #[cfg(all(target_os = "linux", not(miri)))]
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

    #[test]
    fn shared_slices_of_every_size() {
        for n in [0usize, 1, 1000, (MIN_BYTES / 2) + 3, 3 << 20] {
            let mut order = Vec::new();
            let a = shared_slice_rev(n, |i| {
                order.push(i);
                Ok::<u32, ()>(i as u32 * 3)
            })
            .unwrap();
            assert!(a.iter().enumerate().all(|(i, &x)| x == i as u32 * 3));
            assert!(order.iter().rev().copied().eq(0..n), "last to first");
            let src: Vec<u16> = (0..n).map(|i| (i * 7) as u16).collect();
            assert_eq!(&shared_copy(&src)[..], &src[..]);
        }
        let mut calls = 0;
        let e = shared_slice_rev(10, |i| {
            calls += 1;
            if i == 6 {
                Err(i)
            } else {
                Ok(i)
            }
        });
        assert_eq!((e, calls), (Err(6), 4), "stops at the first error");
    }
}
