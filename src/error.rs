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
        Error(format!("{}:{}: {}", path.display(), line, msg))
    }

    /// An error at a byte offset of a binary file.
    pub fn at_byte(path: &Path, offset: u64, msg: impl fmt::Display) -> Self {
        Error(format!("{}: byte {}: {}", path.display(), offset, msg))
    }

    /// An error about a whole file.
    pub fn in_file(path: &Path, msg: impl fmt::Display) -> Self {
        Error(format!("{}: {}", path.display(), msg))
    }

    pub fn io(path: &Path, err: std::io::Error) -> Self {
        let what = match err.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => err.to_string(),
        };
        Error(format!("{}: {}", path.display(), what))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep the promise of one line even if a message was built from multi-line text.
        f.write_str(&self.0.replace('\n', " "))
    }
}

impl std::error::Error for Error {}
