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
    // Written beside the target and renamed over it: a directory that takes no new
    // file (/proc, read-only mounts) is named as the reason.
    let (tmp, file) = Temp::create(temp_name(&target), |p| fs::File::create(p)).map_err(|e| {
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Error::in_file(
            path,
            format!(
                "cannot create a file in {} to write it: {}",
                crate::error::printable_path(dir),
                crate::error::io_reason(&e)
            ),
        )
    })?;
    let result = (|| {
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
/// one of the files the command reads (`inputs`: traces, GGUF parts, profiles, and the
/// traces of an input directory; writing it would destroy it), or a new trace file in an
/// input directory (the next run would read it as one).
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
    // A symlink leading into a directory that is not there.
    if let Ok(target) = fs::read_link(output) {
        let target = output.parent().unwrap_or(Path::new("")).join(target);
        if let Some(dir) = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
        {
            return Err(Error::in_file(
                output,
                format!(
                    "leads into {}, which is not a directory; choose another -o",
                    crate::error::printable_path(dir)
                ),
            ));
        }
    }
    let Some(out) = landing(output) else {
        return Ok(());
    };
    let one_of = || Error::in_file(output, "is one of the inputs; choose another -o");
    for i in inputs {
        let Ok(inp) = fs::canonicalize(i) else {
            continue;
        };
        if !inp.is_dir() {
            if out == inp {
                return Err(one_of());
            }
            continue;
        }
        // A directory of traces: each trace it holds, and a new one in it.
        let members = crate::format::trace_files(&inp).unwrap_or_default();
        if members
            .iter()
            .any(|m| fs::canonicalize(m).is_ok_and(|m| m == out))
        {
            return Err(one_of());
        }
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
        if out.parent() == Some(inp.as_path())
            && name.is_some_and(|n| crate::format::is_trace_name(&n))
        {
            return Err(Error::in_file(
                output,
                format!(
                    "would be read as a trace of the input directory {} next time; choose another -o",
                    crate::error::printable_path(i)
                ),
            ));
        }
    }
    Ok(())
}

/// Whether two outputs would land on the same file.
pub fn same_output(a: &Path, b: &Path) -> bool {
    matches!((landing(a), landing(b)), (Some(x), Some(y)) if x == y)
}

/// Where writing `output` lands: the file (through a symlink, even a dangling one), or,
/// not there yet, its canonical directory and its name.
fn landing(output: &Path) -> Option<PathBuf> {
    if let Ok(p) = fs::canonicalize(output) {
        return Some(p);
    }
    let target = match fs::read_link(output) {
        Ok(t) if t.is_absolute() => t,
        Ok(t) => output.parent().unwrap_or(Path::new("")).join(t),
        Err(_) => output.to_path_buf(),
    };
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = fs::canonicalize(dir.unwrap_or(Path::new("."))).ok()?;
    Some(dir.join(target.file_name()?))
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
/// `-o -` for a trace: refused, not written as a directory named `-` (a trace goes to a
/// file or a directory of forum files, never to stdout).
pub fn refuse_stdout_trace(path: &Path) -> Result<()> {
    if path.as_os_str() == "-" {
        return Err(Error::new(
            "-o -: a trace is written to FILE.mst or to a directory of forum files, not to stdout; name one",
        ));
    }
    Ok(())
}

/// What `write_trace` made of `path`, for the note that names it ("wrote ..."): the
/// file, or the directory and its files (with a hint where the name looks like a
/// file's: `out.txt`), and `details` of the trace in the same parentheses.
pub fn written_trace(trace: &Trace, path: &Path, details: &str) -> String {
    let name = crate::error::printable_path(path);
    let mut inside: Vec<String> = Vec::new();
    if !details.is_empty() {
        inside.push(details.to_string());
    }
    if !is_binary_trace(path) {
        inside.push(format!(
            "{} forum-format files single_response_NNN.txt",
            trace.n_responses()
        ));
        if path.extension().is_some() {
            inside.push("a name ending in .mst writes one binary file".into());
        }
    }
    let kind = if is_binary_trace(path) {
        ""
    } else {
        "directory "
    };
    if inside.is_empty() {
        format!("{kind}{name}")
    } else {
        format!("{kind}{name} ({})", inside.join("; "))
    }
}

fn is_binary_trace(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mst"))
}

pub fn write_trace(trace: &Trace, path: &Path) -> Result<()> {
    if is_binary_trace(path) {
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
