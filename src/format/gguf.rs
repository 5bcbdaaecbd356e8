//! GGUF model files (ggml's docs/gguf.md, versions 2 and 3, little-endian): the header,
//! the metadata key-value pairs and the tensor infos, never the tensor data, so a
//! 300 GB model is read in milliseconds. A model split by llama.cpp's gguf-split
//! (`NAME-0000N-of-0000M.gguf`) is read as all its parts, whichever part is named.
//!
//! Every failure is one line naming the file and the byte offset where the reading
//! stopped. Sizes read from the file are checked against what is left of the file
//! before anything is allocated for them.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::show;
use crate::error::{Error, Result};
use crate::quant::{ggml_type, QuantType};

pub const MAGIC: &[u8; 4] = b"GGUF";
/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Longest string value kept or skipped (chat templates are tens of KB).
const MAX_STRING: u64 = 16 << 20;
/// Integer arrays up to this length are kept (per-layer hyperparameters); longer ones,
/// and arrays of strings or floats (the tokenizer), are skipped.
const MAX_KEPT_ARRAY: u64 = 1 << 16;
/// Arrays of arrays deeper than this are refused (no real model nests them).
const MAX_NESTING: u32 = 4;

/// A metadata value. Integers of every width are widened; skipped arrays keep only their
/// length.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// An array of integers (kept when short).
    Ints(Vec<i128>),
    /// Any other array: its element type id and length.
    Array {
        elem_type: u32,
        len: u64,
    },
}

impl Value {
    /// The value as an unsigned integer (a non-negative integer of any width).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's info: name, shape (ggml order, `dims[0]` along a row), type, and where
/// its data is.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: QuantType,
    /// Offset of the data from the start of the file.
    pub offset: u64,
    /// Bytes of the data.
    pub bytes: u64,
    /// Where the tensor info starts in the file (for messages).
    pub info_at: u64,
}

/// One GGUF file's header and tensor table.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub file_len: u64,
    pub alignment: u64,
    /// Start of the tensor data section.
    pub data_offset: u64,
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
}

impl GgufFile {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A reader that knows its position, so every error can name the byte it stopped at.
struct Cursor<'p, R> {
    r: R,
    pos: u64,
    len: u64,
    path: &'p Path,
}

impl<R: Read> Cursor<'_, R> {
    fn err(&self, at: u64, msg: impl std::fmt::Display) -> Error {
        Error::at_byte(self.path, at, msg)
    }

    fn left(&self) -> u64 {
        self.len - self.pos
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        if self.left() < N as u64 {
            return Err(self.err(
                self.pos,
                format!("the file ends inside {what} (a truncated GGUF header?)"),
            ));
        }
        self.r
            .read_exact(&mut b)
            .map_err(|e| self.err(self.pos, format!("cannot read {what}: {e}")))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        if self.left() < n {
            return Err(self.err(
                self.pos,
                format!("the file ends inside {what} (a truncated GGUF header?)"),
            ));
        }
        let got = io::copy(&mut (&mut self.r).take(n), &mut io::sink())
            .map_err(|e| self.err(self.pos, format!("cannot read {what}: {e}")))?;
        if got != n {
            return Err(self.err(self.pos + got, format!("the file ends inside {what}")));
        }
        self.pos += n;
        Ok(())
    }

    /// A string's length, checked against the file and `max`.
    fn string_len(&mut self, what: &str, max: u64) -> Result<u64> {
        let at = self.pos;
        let n = self.u64(what)?;
        if n > max {
            return Err(self.err(at, format!("{what} is {n} bytes long (at most {max})")));
        }
        if n > self.left() {
            return Err(self.err(
                at,
                format!(
                    "{what} is {n} bytes long, more than the {} bytes left (a truncated GGUF header?)",
                    self.left()
                ),
            ));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str, max: u64) -> Result<String> {
        let n = self.string_len(what, max)?;
        let at = self.pos;
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| self.err(at, format!("cannot read {what}: {e}")))?;
        self.pos += n;
        String::from_utf8(b).map_err(|_| self.err(at, format!("{what} is not UTF-8")))
    }

    /// A value of type `ty`; arrays nest at most `MAX_NESTING` deep.
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        let what = format!("the value of `{key}`");
        Ok(match ty {
            0 => Value::Uint(self.bytes::<1>(&what)?[0] as u64),
            1 => Value::Int(self.bytes::<1>(&what)?[0] as i8 as i64),
            2 => Value::Uint(u16::from_le_bytes(self.bytes(&what)?) as u64),
            3 => Value::Int(i16::from_le_bytes(self.bytes(&what)?) as i64),
            4 => Value::Uint(self.u32(&what)? as u64),
            5 => Value::Int(i32::from_le_bytes(self.bytes(&what)?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes(&what)?) as f64),
            7 => {
                let at = self.pos;
                match self.bytes::<1>(&what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(self.err(at, format!("{what} is a bool of byte {b} (0 or 1)"))),
                }
            }
            8 => Value::Str(self.string(&what, MAX_STRING)?),
            9 => self.array(key, depth)?,
            10 => Value::Uint(self.u64(&what)?),
            11 => Value::Int(i64::from_le_bytes(self.bytes(&what)?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes(&what)?)),
            _ => unreachable!("checked by value_type"),
        })
    }

    fn value_type(&mut self, key: &str) -> Result<u32> {
        let at = self.pos;
        let ty = self.u32(&format!("the type of `{key}`"))?;
        if ty > 12 {
            return Err(self.err(
                at,
                format!("`{key}` has value type {ty}, not a GGUF metadata type (0..=12)"),
            ));
        }
        Ok(ty)
    }

    fn array(&mut self, key: &str, depth: u32) -> Result<Value> {
        let at = self.pos;
        if depth >= MAX_NESTING {
            return Err(self.err(
                at,
                format!("`{key}` nests arrays more than {MAX_NESTING} deep"),
            ));
        }
        let elem_type = self.value_type(key)?;
        let len_at = self.pos;
        let len = self.u64(&format!("the length of `{key}`"))?;
        // Each element takes at least a byte (a string at least 8): a length the rest
        // of the file cannot hold is refused before looping over it.
        let min = match elem_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8..=12 => 8,
            _ => unreachable!(),
        };
        if len.checked_mul(min).is_none_or(|n| n > self.left()) {
            return Err(self.err(
                len_at,
                format!(
                    "`{key}` is an array of {len} elements, more than the {} bytes left can hold (a truncated GGUF header?)",
                    self.left()
                ),
            ));
        }
        let what = format!("the array `{key}`");
        match elem_type {
            0..=5 | 10 | 11 if len <= MAX_KEPT_ARRAY => {
                let mut v = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    v.push(match self.value(elem_type, key, depth + 1)? {
                        Value::Uint(u) => u as i128,
                        Value::Int(i) => i as i128,
                        _ => unreachable!("integer types"),
                    });
                }
                Ok(Value::Ints(v))
            }
            0..=7 | 10..=12 => {
                self.skip(len * min, &what)?;
                Ok(Value::Array { elem_type, len })
            }
            8 => {
                for _ in 0..len {
                    let n = self.string_len(&format!("a string of `{key}`"), MAX_STRING)?;
                    self.skip(n, &what)?;
                }
                Ok(Value::Array { elem_type, len })
            }
            _ => {
                // Each element is an array value of its own: type, length, elements.
                for _ in 0..len {
                    self.array(key, depth + 1)?;
                }
                Ok(Value::Array { elem_type, len })
            }
        }
    }
}

/// Read one GGUF file's header, metadata and tensor infos.
pub fn read_file(path: &Path) -> Result<GgufFile> {
    if path.is_dir() {
        return Err(Error::in_file(
            path,
            "is a directory; --gguf takes a GGUF file",
        ));
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    read(path, BufReader::with_capacity(1 << 16, f), len)
}

/// Read a GGUF's header, metadata and tensor infos from `r`, the start of a file of
/// `len` bytes; `path` names it in messages.
pub fn read(path: &Path, r: impl Read, len: u64) -> Result<GgufFile> {
    let mut c = Cursor {
        r,
        pos: 0,
        len,
        path,
    };
    let magic: [u8; 4] = c.bytes("the magic number").map_err(|_| {
        Error::at_byte(
            path,
            0,
            format!("not a GGUF file: it has {len} bytes, fewer than the 4 of the magic `GGUF`"),
        )
    })?;
    if &magic != MAGIC {
        return Err(Error::at_byte(
            path,
            0,
            format!(
                "not a GGUF file: it starts with {:02x?}, not `GGUF`",
                &magic[..]
            ),
        ));
    }
    let version = c.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => return Err(c.err(4, "GGUF version 1 (32-bit counts) is not supported; convert the file with a current llama.cpp")),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(c.err(4, "a big-endian GGUF is not supported"))
        }
        v => return Err(c.err(4, format!("unknown GGUF version {v} (2 and 3 are read)"))),
    }
    let n_tensors = c.u64("the tensor count")?;
    let n_kv = c.u64("the metadata count")?;
    // A key-value pair takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 4 + 8.
    if n_kv.checked_mul(14).is_none_or(|n| n > c.left()) {
        return Err(c.err(16, format!("the header promises {n_kv} metadata pairs, more than the {len}-byte file can hold (a truncated GGUF header?)")));
    }
    if n_tensors.checked_mul(25).is_none_or(|n| n > c.left()) {
        return Err(c.err(8, format!("the header promises {n_tensors} tensors, more than the {len}-byte file can hold (a truncated GGUF header?)")));
    }
    let mut kv = Vec::with_capacity(n_kv as usize);
    for _ in 0..n_kv {
        let key = c.string("a metadata key", u16::MAX as u64)?;
        // Messages quote file content escaped, on one line.
        let shown = show(key.as_bytes(), 80);
        let ty = c.value_type(&shown)?;
        let v = c.value(ty, &shown, 0)?;
        kv.push((key, v));
    }
    let mut file = GgufFile {
        path: path.to_path_buf(),
        version,
        file_len: len,
        alignment: DEFAULT_ALIGNMENT,
        data_offset: 0,
        kv,
        tensors: Vec::with_capacity(n_tensors as usize),
    };
    if let Some(v) = file.get("general.alignment") {
        match v {
            Value::Uint(a) if *a > 0 && a.is_power_of_two() && *a <= 1 << 30 => file.alignment = *a,
            _ => {
                return Err(Error::in_file(
                    path,
                    format!("general.alignment is {v:?}, not a power of two"),
                ))
            }
        }
    }
    // Tensor infos: offsets relative to the data section, which starts after them.
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let info_at = c.pos;
        let raw_name = c.string("a tensor name", u16::MAX as u64)?;
        let name = show(raw_name.as_bytes(), 80);
        let dims_at = c.pos;
        let n_dims = c.u32(&format!("the dimension count of `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(c.err(
                dims_at,
                format!("tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&format!("the dimensions of `{name}`"))?);
        }
        let type_at = c.pos;
        let id = c.u32(&format!("the type of `{name}`"))?;
        let ty = ggml_type(id).ok_or_else(|| {
            c.err(
                type_at,
                format!("tensor `{name}` has ggml type {id}, which moe-spill does not know"),
            )
        })?;
        let off_at = c.pos;
        let offset = c.u64(&format!("the data offset of `{name}`"))?;
        if offset % file.alignment != 0 {
            return Err(c.err(
                off_at,
                format!(
                    "tensor `{name}` has data offset {offset}, not a multiple of the alignment {}",
                    file.alignment
                ),
            ));
        }
        let bytes =
            tensor_bytes(&dims, ty).map_err(|m| c.err(dims_at, format!("tensor `{name}`: {m}")))?;
        raw.push((raw_name, dims, ty, offset, bytes, info_at));
    }
    let a = file.alignment;
    file.data_offset = c.pos.div_ceil(a) * a;
    for (name, dims, ty, offset, bytes, info_at) in raw {
        let start = file.data_offset.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(bytes));
        match (start, end) {
            (Some(start), Some(end)) if end <= len => file.tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset: start,
                bytes,
                info_at,
            }),
            _ => {
                return Err(Error::at_byte(
                    path,
                    info_at,
                    format!(
                        "tensor `{}` ({bytes} bytes at data offset {offset}) ends past the end of the {len}-byte file (a truncated GGUF?)",
                        show(name.as_bytes(), 80)
                    ),
                ))
            }
        }
    }
    Ok(file)
}

/// Bytes of a tensor: rows of `dims[0]` elements in whole blocks.
fn tensor_bytes(dims: &[u64], ty: QuantType) -> std::result::Result<u64, String> {
    let ne0 = dims.first().copied().unwrap_or(1);
    let row = ty.row_bytes(ne0).ok_or_else(|| {
        format!(
            "{} rows of {ne0} elements are not a whole number of {}-element blocks",
            ty.name, ty.elems
        )
    })?;
    dims.iter()
        .skip(1)
        .try_fold(row, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {dims:?} overflows 64 bits"))
}

/// The parts of a split model: `NAME-0000N-of-0000M.gguf` gives every
/// `NAME-0000i-of-0000M.gguf`, i = 1..=M; any other name is a model of one part.
pub fn split_parts(path: &Path) -> Vec<PathBuf> {
    // A link named otherwise to a part: the parts beside the part it leads to.
    split_named(path)
        .or_else(|| {
            let target = std::fs::canonicalize(path).ok()?;
            split_named(&target)
        })
        .unwrap_or_else(|| vec![path.to_path_buf()])
}

/// The parts of a split model named as `NAME-0000N-of-0000M.gguf`, if `path` is.
fn split_named(path: &Path) -> Option<Vec<PathBuf>> {
    let name = path.file_name().and_then(|n| n.to_str())?;
    let parsed = name.strip_suffix(".gguf").and_then(|stem| {
        let (head, total) = stem.rsplit_once("-of-")?;
        let (base, no) = head.rsplit_once('-')?;
        let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
        (digits(no) && digits(total)).then_some((base, total.parse::<u32>().ok()?))
    });
    match parsed {
        Some((base, total)) if total >= 1 => Some(
            (1..=total)
                .map(|i| path.with_file_name(format!("{base}-{i:05}-of-{total:05}.gguf")))
                .collect(),
        ),
        _ => None,
    }
}

/// Read a model: one file, or every part of a split one (checked against the parts'
/// `split.no` / `split.count` when they carry them).
pub fn read_model(path: &Path) -> Result<Vec<GgufFile>> {
    let parts = split_parts(path);
    let total = parts.len();
    let mut files = Vec::with_capacity(total);
    for (i, p) in parts.iter().enumerate() {
        if total > 1 && !p.exists() {
            return Err(Error::in_file(
                p,
                format!(
                    "part {} of the split model {} is missing",
                    i + 1,
                    path.display()
                ),
            ));
        }
        let f = read_file(p)?;
        let count = f.get("split.count").and_then(Value::as_u64);
        if total == 1 && count.is_some_and(|c| c > 1) {
            return Err(Error::in_file(
                p,
                format!(
                    "split.count says the model has {} parts, but the name is not NAME-0000N-of-0000M.gguf: keep gguf-split's names",
                    count.unwrap_or(0)
                ),
            ));
        }
        if total > 1 {
            let no = f.get("split.no").and_then(Value::as_u64);
            if no.is_some_and(|n| n != i as u64) || count.is_some_and(|c| c != total as u64) {
                return Err(Error::in_file(
                    p,
                    format!(
                        "split.no {} / split.count {} do not match the name (part {} of {total})",
                        no.map_or("-".into(), |v| v.to_string()),
                        count.map_or("-".into(), |v| v.to_string()),
                        i + 1
                    ),
                ));
            }
        }
        files.push(f);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names_give_every_part() {
        let p = Path::new("/m/GLM-5.2-UD-IQ1_M-00002-of-00003.gguf");
        let parts = split_parts(p);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[0],
            Path::new("/m/GLM-5.2-UD-IQ1_M-00001-of-00003.gguf")
        );
        assert_eq!(
            parts[2].file_name().unwrap(),
            "GLM-5.2-UD-IQ1_M-00003-of-00003.gguf"
        );
        for one in [
            "/m/model.gguf",
            "/m/a-1-of-2.gguf",
            "/m/x-00001-of-00002.bin",
        ] {
            assert_eq!(split_parts(Path::new(one)), vec![PathBuf::from(one)]);
        }
        // A link named otherwise to a part: the parts beside the part it leads to.
        let d = tempfile::tempdir().unwrap();
        let part = d.path().join("m-00002-of-00002.gguf");
        std::fs::write(&part, b"").unwrap();
        let link = d.path().join("model.gguf");
        std::os::unix::fs::symlink(&part, &link).unwrap();
        let dir = d.path().canonicalize().unwrap();
        assert_eq!(
            split_parts(&link),
            vec![
                dir.join("m-00001-of-00002.gguf"),
                dir.join("m-00002-of-00002.gguf")
            ]
        );
    }

    #[test]
    fn tensor_bytes_follow_the_blocks() {
        let iq4 = crate::quant::quant_type("iq4_xs").unwrap();
        // GLM-5's gate_exps: {6144, 2048, 256}.
        assert_eq!(
            tensor_bytes(&[6144, 2048, 256], iq4).unwrap(),
            6144 / 256 * 136 * 2048 * 256
        );
        assert!(tensor_bytes(&[100, 2], iq4).is_err());
        assert!(tensor_bytes(&[256, u64::MAX], iq4).is_err());
        assert_eq!(tensor_bytes(&[], ggml_type(0).unwrap()).unwrap(), 4);
    }
}
