//! A trace's ids: an ordinary vector, or a read-only view into a memory-mapped `.mst`
//! file. Mapping a file that is in the page cache costs no fresh memory: reading it
//! instead means the kernel zeroes a new buffer as big as the file and copies into it,
//! which took more time than everything else a short `simulate` does. Reads go
//! through `Deref<Target = [u16]>`; the first write turns a mapped trace into an owned
//! copy, so code that edits ids (merging files, renumbering) never sees the difference.

use std::ops::{Deref, DerefMut};

pub struct Ids(Repr);

enum Repr {
    Owned(Vec<u16>),
    Mapped(Mapping),
}

impl Ids {
    pub fn new() -> Self {
        Ids(Repr::Owned(Vec::new()))
    }

    /// Whether the ids are a view into a mapped file (for tests and `info`).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped(_))
    }

    /// The ids as an owned vector, copying them out of a mapping first.
    pub fn to_mut(&mut self) -> &mut Vec<u16> {
        if let Repr::Mapped(m) = &self.0 {
            let mut v = moe_spill_huge::zeroed_vec(m.ids().len());
            v.copy_from_slice(m.ids());
            self.0 = Repr::Owned(v);
        }
        match &mut self.0 {
            Repr::Owned(v) => v,
            Repr::Mapped(_) => unreachable!("just copied"),
        }
    }

    pub fn extend_from_slice(&mut self, ids: &[u16]) {
        self.to_mut().extend_from_slice(ids);
    }

    pub fn push(&mut self, id: u16) {
        self.to_mut().push(id);
    }
}

impl Default for Ids {
    fn default() -> Self {
        Ids::new()
    }
}

impl From<Vec<u16>> for Ids {
    fn from(v: Vec<u16>) -> Self {
        Ids(Repr::Owned(v))
    }
}

impl Deref for Ids {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Mapped(m) => m.ids(),
        }
    }
}

impl DerefMut for Ids {
    fn deref_mut(&mut self) -> &mut [u16] {
        self.to_mut()
    }
}

impl Extend<u16> for Ids {
    fn extend<I: IntoIterator<Item = u16>>(&mut self, iter: I) {
        self.to_mut().extend(iter);
    }
}

impl<'a> Extend<&'a u16> for Ids {
    fn extend<I: IntoIterator<Item = &'a u16>>(&mut self, iter: I) {
        self.to_mut().extend(iter);
    }
}

impl<'a> IntoIterator for &'a Ids {
    type Item = &'a u16;
    type IntoIter = std::slice::Iter<'a, u16>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Clone for Ids {
    fn clone(&self) -> Self {
        Ids(Repr::Owned(self.to_vec()))
    }
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.deref().fmt(f)
    }
}

impl PartialEq for Ids {
    fn eq(&self, other: &Ids) -> bool {
        self.deref() == other.deref()
    }
}

impl Eq for Ids {}

impl PartialEq<Vec<u16>> for Ids {
    fn eq(&self, other: &Vec<u16>) -> bool {
        self.deref() == other.as_slice()
    }
}

/// A whole file mapped read-only, and where its ids lie in it.
pub struct Mapping {
    map: memmap2::Mmap,
    /// Byte offset of the first id (even) and the number of ids.
    offset: usize,
    n: usize,
}

impl Mapping {
    /// Map `len` bytes of `file` (its whole length) privately, with its pages populated
    /// up front (MAP_POPULATE, on Linux). None where mapping fails: the caller reads the
    /// file instead.
    pub fn of_file(file: &std::fs::File, len: u64) -> Option<Mapping> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        // SAFETY: like every mapped input (ripgrep's, for one), this assumes nobody
        // rewrites or truncates the file while it is mapped: a truncation makes the next
        // read of a lost page a SIGBUS, and a write in place shows through private pages
        // not yet read. moe-spill's own writers never do either (they write a temporary
        // file and rename it over the old one).
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(len)
                .populate()
                .map_copy_read_only(file)
        };
        map.ok().map(|map| Mapping {
            map,
            offset: 0,
            n: 0,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Ids that are the `n` little-endian u16s at byte `offset` of the mapping: only on
    /// little-endian hosts and at an even offset (the mapping itself is page-aligned).
    /// Otherwise the mapping comes back for the caller to copy from.
    pub fn into_ids(mut self, offset: usize, n: usize) -> Result<Ids, Mapping> {
        let fits = n
            .checked_mul(2)
            .and_then(|b| b.checked_add(offset))
            .is_some_and(|end| end <= self.map.len());
        if cfg!(target_endian = "big") || !offset.is_multiple_of(2) || !fits {
            return Err(self);
        }
        self.offset = offset;
        self.n = n;
        Ok(Ids(Repr::Mapped(self)))
    }

    fn ids(&self) -> &[u16] {
        // `into_ids` checked that `n` u16s from the even `offset` lie inside the
        // page-aligned mapping, so the cast neither fails nor panics.
        bytemuck::cast_slice(&self.map[self.offset..self.offset + 2 * self.n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_reads_like_a_vector_and_copies_on_write() {
        let mut f = tempfile::tempfile().unwrap();
        use std::io::Write;
        let mut bytes = vec![0xAAu8; 6]; // an even offset of 6
        for id in [7u16, 300, 65535, 0] {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        f.write_all(&bytes).unwrap();
        let Some(m) = Mapping::of_file(&f, bytes.len() as u64) else {
            return; // no mmap here: the readers fall back to reading
        };
        assert_eq!(m.bytes(), &bytes[..]);
        let m = m.into_ids(5, 2).expect_err("odd offset refused");
        let m = m.into_ids(6, 5).expect_err("past the end refused");
        let mut ids = m.into_ids(6, 4).ok().expect("ids at an even offset");
        assert!(ids.is_mapped());
        assert_eq!(ids, vec![7, 300, 65535, 0]);
        let copy = ids.clone();
        ids[1] = 5;
        assert!(!ids.is_mapped());
        assert_eq!(ids, vec![7, 5, 65535, 0]);
        assert_eq!(copy, vec![7, 300, 65535, 0]);
        ids.extend_from_slice(&[1, 2]);
        assert_eq!(ids.len(), 6);
    }
}
