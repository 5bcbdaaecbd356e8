//! Files written atomically: through a temporary name in the same directory, renamed
//! into place, so a failed run never leaves a partial file or directory behind. The
//! temporary names are registered in [`super::cleanup`], which removes them on SIGINT,
//! SIGTERM and SIGHUP.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::cleanup::Temp;
use crate::error::{Error, Result};
use crate::format;
use crate::trace::Trace;

/// Write a file through a temporary name in the same directory and rename it into
/// place, so a failed run never leaves a partial file behind. A symlink is followed (its
/// target is replaced, the link kept), an existing file keeps its permissions, and what
/// is not a regular file (a device, a FIFO, `/dev/fd/N`) is written through as a stream.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<fs::File>) -> io::Result<()>,
) -> Result<()> {
    let existing = fs::metadata(path).ok();
    if let Some(m) = &existing {
        if !m.is_file() && !m.is_dir() {
            let result = (|| {
                let file = fs::OpenOptions::new().write(true).open(path)?;
                let mut w = io::BufWriter::with_capacity(1 << 20, file);
                fill(&mut w)?;
                w.flush()
            })();
            return result.map_err(|e| Error::io(path, e));
        }
    }
    // The file a symlink names is the one replaced.
    let target = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or_else(|_| {
            let link = fs::read_link(path).unwrap_or_default();
            path.parent().unwrap_or(Path::new("")).join(link)
        }),
        _ => path.to_path_buf(),
    };
    let result = (|| {
        let (tmp, file) = Temp::create(temp_name(&target), |p| fs::File::create(p))?;
        if let Some(m) = &existing {
            file.set_permissions(m.permissions())?;
        }
        let mut w = io::BufWriter::with_capacity(1 << 20, file);
        fill(&mut w)?;
        w.flush()?;
        w.get_ref().sync_data()?;
        drop(w);
        tmp.persist(|tmp| fs::rename(tmp, &target))
    })();
    result.map_err(|e| Error::io(path, e))
}

/// Refuse an output before the work that makes it: one in a directory that is not there,
/// one of the files the command reads (`inputs`: traces, GGUF parts, profiles; writing it
/// would destroy it), or a file inside an input directory of traces (the next run would
/// read it as a trace).
pub fn refuse_input_as_output(output: &Path, inputs: &[PathBuf]) -> Result<()> {
    // Checked before the work, not after it: a file in a directory that is not there.
    let parent = output.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent {
        if !dir.is_dir() {
            return Err(Error::in_file(
                output,
                format!(
                    "{} is not a directory; choose another -o",
                    crate::error::printable_path(dir)
                ),
            ));
        }
    }
    // Where the output lands: the file itself, or (not there yet) its directory and name.
    let out = match fs::canonicalize(output) {
        Ok(p) => p,
        Err(_) => match (
            fs::canonicalize(parent.unwrap_or(Path::new("."))),
            output.file_name(),
        ) {
            (Ok(dir), Some(name)) => dir.join(name),
            _ => return Ok(()),
        },
    };
    for i in inputs {
        let Ok(inp) = fs::canonicalize(i) else {
            continue;
        };
        if inp.is_dir() && out.starts_with(&inp) {
            return Err(Error::in_file(
                output,
                format!(
                    "is inside the input directory {}; choose another -o",
                    crate::error::printable_path(i)
                ),
            ));
        }
        if out == inp {
            return Err(Error::in_file(
                output,
                "is one of the inputs; choose another -o",
            ));
        }
    }
    Ok(())
}

/// Create a directory of files atomically: fill a temporary sibling directory, then
/// rename it into place. An existing non-empty directory is refused.
pub fn write_dir_atomic(path: &Path, fill: impl FnOnce(&Path) -> io::Result<()>) -> Result<()> {
    if let Ok(mut entries) = fs::read_dir(path) {
        if entries.next().is_some() {
            return Err(Error::in_file(
                path,
                "output directory exists and is not empty; remove it or choose another -o",
            ));
        }
    } else if path.exists() {
        return Err(Error::in_file(path, "exists and is not a directory"));
    }
    let result = (|| {
        let name = temp_name(path);
        let _ = fs::remove_dir_all(&name); // left by an earlier process of the same id
        let (tmp, ()) = Temp::create(name, |p| fs::create_dir_all(p))?;
        fill(tmp.path())?;
        tmp.persist(|tmp| {
            if path.exists() {
                fs::remove_dir(path)?; // empty, checked above
            }
            fs::rename(tmp, path)
        })
    })();
    result.map_err(|e| Error::io(path, e))
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Write a trace to `path`: `.mst` = one binary file, anything else = a directory of
/// forum-format files.
pub fn write_trace(trace: &Trace, path: &Path) -> Result<()> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mst"))
    {
        write_atomic(path, |w| format::binary::write(trace, w))
    } else {
        let digits = trace.n_responses().to_string().len().max(3);
        write_dir_atomic(path, |dir| {
            for r in 0..trace.n_responses() {
                let name = format!("single_response_{:0digits$}.txt", r + 1);
                let f = std::fs::File::create(dir.join(name))?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                format::forum::write(trace, r, &mut w)?;
                std::io::Write::flush(&mut w)?;
            }
            Ok(())
        })
    }
}
