//! One error type for everything the user can get wrong.
//!
//! Bad input ends the program with a one-line message naming the file (and line or
//! byte offset) and what was expected, and exit status 2. Bugs panic; input never does.

use std::fmt;
use std::path::Path;

/// A user-facing error: one line, printed as `moe-spill: <message>`, exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }

    /// An error at `file:line`.
    pub fn at_line(path: &Path, line: u64, msg: impl fmt::Display) -> Self {
        Error(format!("{}:{}: {}", printable_path(path), line, msg))
    }

    /// An error at a byte offset of a binary file.
    pub fn at_byte(path: &Path, offset: u64, msg: impl fmt::Display) -> Self {
        Error(format!(
            "{}: byte {}: {}",
            printable_path(path),
            offset,
            msg
        ))
    }

    /// An error about a whole file.
    pub fn in_file(path: &Path, msg: impl fmt::Display) -> Self {
        Error(format!("{}: {}", printable_path(path), msg))
    }

    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error(format!("{}: {}", printable_path(path), io_reason(&err)))
    }
}

/// An I/O error's reason as the messages give it (without the OS error number).
pub fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => err.to_string(),
    }
}

/// Text for a message, with control characters escaped (`\n`, `\r`, `\t`, `\u{1b}`,
/// `\u{0}`), and the Unicode line and paragraph separators too, so that whatever a file
/// or its name holds, the message stays one printable line and cannot drive the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A path for a message: as `path.display()` shows it (invalid UTF-8 replaced), with
/// control characters escaped as [`printable`] does.
pub fn printable_path(path: &Path) -> String {
    printable(&path.to_string_lossy())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep the promise of one line even if a message was built from multi-line text.
        f.write_str(&self.0.replace('\n', " "))
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_messages_are_escaped() {
        let p = Path::new("a\nb\x1b[31m\tc\r\0.txt");
        assert_eq!(
            Error::at_line(p, 3, "bad").0,
            r"a\nb\u{1b}[31m\tc\r\u{0}.txt:3: bad"
        );
        assert_eq!(
            Error::io(p, std::io::ErrorKind::NotFound.into()).0,
            r"a\nb\u{1b}[31m\tc\r\u{0}.txt: no such file or directory"
        );
        assert_eq!(printable("é\u{2028}x"), r"é\u{2028}x");
    }
}
