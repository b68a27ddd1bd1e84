//! What could not be read, and why, as data: a verdict built on a fact the scan could not read
//! is "unknown", never "fine", and permission denied is never reported as "missing".

use std::io;

use super::io::is_absent;
use crate::bdf::Bdf;
use crate::beneath::is_not_regular;

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const EXDEV: i32 = 18;

/// Why a fact could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadFailure {
    /// Not there: a group member the kernel lists without a device directory, an attribute
    /// that should exist but does not.
    Missing,
    /// The caller may not read it (`EACCES`/`EPERM`).
    PermissionDenied,
    /// Something other than a regular file where the kernel puts one (a FIFO, a device node,
    /// a directory, a link).
    NotRegularFile,
    /// A link that leads out of the root given (absolute, or `..` past the root).
    EscapesRoot,
    /// Read, but not what the kernel writes there (empty, truncated, not UTF-8, out of range).
    Invalid,
    /// Any other error, with its errno.
    Os(i32),
}

impl ReadFailure {
    /// Classifies an I/O error.
    pub fn of(err: &io::Error) -> Self {
        if is_not_regular(err) {
            return Self::NotRegularFile;
        }
        match err.raw_os_error() {
            Some(EACCES | EPERM) => Self::PermissionDenied,
            Some(EXDEV) => Self::EscapesRoot,
            Some(_) if is_absent(err) => Self::Missing,
            Some(errno) => Self::Os(errno),
            None => Self::Invalid,
        }
    }

    /// A stable name: `missing`, `permission-denied`, `not-a-regular-file`, `escapes-root`,
    /// `invalid` or `os-error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::PermissionDenied => "permission-denied",
            Self::NotRegularFile => "not-a-regular-file",
            Self::EscapesRoot => "escapes-root",
            Self::Invalid => "invalid",
            Self::Os(_) => "os-error",
        }
    }

    /// The errno behind an OS failure.
    pub fn errno(self) -> Option<i32> {
        match self {
            Self::Os(errno) => Some(errno),
            Self::PermissionDenied => Some(EACCES),
            Self::EscapesRoot => Some(EXDEV),
            _ => None,
        }
    }
}

/// One fact of one function that could not be read: `attribute` names the sysfs file or link
/// (`uevent`, `driver`, `resource`, `device` for the device directory itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadProblem {
    pub bdf: Bdf,
    pub attribute: &'static str,
    pub failure: ReadFailure,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beneath::NotRegularFile;

    #[test]
    fn classifies_errors() {
        let of = |errno| ReadFailure::of(&io::Error::from_raw_os_error(errno));
        assert_eq!(of(13), ReadFailure::PermissionDenied);
        assert_eq!(of(1), ReadFailure::PermissionDenied);
        assert_eq!(of(2), ReadFailure::Missing);
        assert_eq!(of(18), ReadFailure::EscapesRoot);
        assert_eq!(of(40), ReadFailure::NotRegularFile);
        assert_eq!(of(5), ReadFailure::Os(5));
        assert_eq!(
            ReadFailure::of(&io::Error::other(NotRegularFile { kind: None })),
            ReadFailure::NotRegularFile
        );
        assert_eq!(
            ReadFailure::of(&io::Error::new(io::ErrorKind::InvalidData, "utf-8")),
            ReadFailure::Invalid
        );
        assert_eq!(ReadFailure::PermissionDenied.as_str(), "permission-denied");
        assert_eq!(ReadFailure::Os(5).errno(), Some(5));
    }
}
