//! The one error type of the core. OS failures keep the path and the errno, and every error
//! can say in one line what the user should do about it. Where that is a step of this tool
//! (act anyway, restore, look at the IOMMU state...), the error names it as data
//! ([`Remedy`]): the core spells no command or option, the caller words it.

use std::io;
use std::path::{Path, PathBuf};

/// Result alias used across the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the core can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PCI address that does not parse.
    #[error("invalid PCI address {}: {reason}", echo(input))]
    InvalidBdf { input: String, reason: String },

    /// Some other outside value (group number, device node path, driver name) is malformed.
    #[error("invalid {what} {}: {reason}", echo(input))]
    InvalidInput {
        what: &'static str,
        input: String,
        reason: String,
    },

    /// A system call on a path failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: Option<String>,
    },

    /// A VFIO or iommufd ioctl, or the open of a VFIO node, failed.
    #[error("{op} on {path}: {source}")]
    Vfio {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
        hint: Option<String>,
        remedies: Vec<Remedy>,
    },

    /// Binding, unbinding or restoring a driver failed or was refused. `message` says what
    /// was rolled back; `errno` is the kernel's answer when a sysfs write failed.
    #[error("{message}")]
    Bind {
        message: String,
        errno: Option<i32>,
        hint: Option<String>,
        remedies: Vec<Remedy>,
    },

    /// The thing asked for does not exist on this host (a BDF that is not present, say).
    #[error("{what} {name} not found{}", .hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    NotFound {
        what: &'static str,
        name: String,
        hint: Option<String>,
        remedies: Vec<Remedy>,
    },
}

/// A step of this tool that would help with an error, as data; the Python layer words it
/// (`kata_vfio.host.render.remedy_text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Remedy {
    /// The operation's force option acts anyway (and reports what it overrode).
    Force,
    /// A restore puts the journaled devices back; it may be run again.
    Restore,
    /// The host's IOMMU state (and the boot argument it lacks) explains the refusal.
    CheckIommu,
    /// Binding every endpoint of the device's IOMMU group to vfio-pci.
    BindGroup,
    /// Naming the driver explicitly instead of the one looked up.
    NameDriver,
    /// Another state directory for the journal.
    OtherStateDir,
    /// The list of the host's PCI devices.
    ListDevices,
}

impl Remedy {
    /// A stable name: `force`, `restore`, `check-iommu`, `bind-group`, `name-driver`,
    /// `state-dir`, `list-devices`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Force => "force",
            Self::Restore => "restore",
            Self::CheckIommu => "check-iommu",
            Self::BindGroup => "bind-group",
            Self::NameDriver => "name-driver",
            Self::OtherStateDir => "state-dir",
            Self::ListDevices => "list-devices",
        }
    }
}

/// Characters of an outside value quoted in a message; a longer one is cut there.
const ECHO_LIMIT: usize = 72;

/// An outside value as a message quotes it: `{:?}`, or its head and its full length when it
/// is long (a hostile input can be megabytes; the head is enough to recognise it).
fn echo(input: &str) -> String {
    let count = input.chars().count();
    if count <= ECHO_LIMIT {
        return format!("{input:?}");
    }
    let head: String = input.chars().take(ECHO_LIMIT).collect();
    format!("{head:?}... ({count} characters)")
}

impl Error {
    pub(crate) fn invalid_bdf(input: String, reason: &str) -> Self {
        Self::InvalidBdf {
            input,
            reason: reason.to_owned(),
        }
    }

    pub fn invalid(
        what: &'static str,
        input: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidInput {
            what,
            input: input.into(),
            reason: reason.into(),
        }
    }

    /// An OS error on `path`, with the default hint for its errno.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        let hint = default_hint(&source);
        Self::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
            hint,
        }
    }

    /// Replaces the hint of an I/O, VFIO or bind error (no effect on other variants).
    #[must_use]
    pub fn with_hint(mut self, text: impl Into<String>) -> Self {
        if let Self::Io { hint, .. } | Self::Vfio { hint, .. } | Self::Bind { hint, .. } = &mut self
        {
            *hint = Some(text.into());
        }
        self
    }

    /// A bind refusal or failure, with the one line on what to do and the steps that help.
    pub fn bind(message: impl Into<String>, hint: impl Into<String>, remedies: &[Remedy]) -> Self {
        Self::Bind {
            message: message.into(),
            errno: None,
            hint: Some(hint.into()),
            remedies: remedies.to_vec(),
        }
    }

    /// The steps of this tool that would help (bind, VFIO and not-found errors).
    pub fn remedies(&self) -> &[Remedy] {
        match self {
            Self::Bind { remedies, .. }
            | Self::Vfio { remedies, .. }
            | Self::NotFound { remedies, .. } => remedies,
            _ => &[],
        }
    }

    /// The errno of an OS failure.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Io { source, .. } | Self::Vfio { source, .. } => source.raw_os_error(),
            Self::Bind { errno, .. } => *errno,
            _ => None,
        }
    }

    /// The path an OS failure happened on.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. } | Self::Vfio { path, .. } => Some(path),
            _ => None,
        }
    }

    /// One line on what to do.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Io { hint, .. }
            | Self::Vfio { hint, .. }
            | Self::Bind { hint, .. }
            | Self::NotFound { hint, .. } => hint.as_deref(),
            Self::InvalidBdf { .. } => Some("write the address as DDDD:BB:DD.F, e.g. 0000:01:00.0"),
            Self::InvalidInput { .. } => None,
        }
    }
}

fn default_hint(err: &io::Error) -> Option<String> {
    let text = match err.raw_os_error()? {
        libc_errno::EACCES | libc_errno::EPERM => {
            "run as root (or with CAP_SYS_ADMIN) and check the device cgroup"
        }
        libc_errno::ENOENT => {
            "the path does not exist: check the sysfs/dev roots and that the device is present"
        }
        libc_errno::EBUSY => "the device or group is in use by another process or driver",
        libc_errno::ENOMEM => "raise RLIMIT_MEMLOCK (ulimit -l) for the process that maps DMA",
        libc_errno::EXDEV => {
            "the path leads outside the given root (an absolute symlink or `..`): the tree is \
             not a faithful copy; nothing outside the root is read or written"
        }
        libc_errno::ELOOP => "a symlink where a file was expected: refusing to follow it",
        _ => return None,
    };
    Some(text.to_owned())
}

/// The few errno values the hints need, without a libc dependency.
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EXDEV: i32 = 18;
    pub const ELOOP: i32 = 40;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_input_is_quoted_cut_short_with_its_length() {
        let long = "9".repeat(5000);
        let message = Error::invalid_bdf(long, "too long").to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("... (5000 characters)"), "{message}");
        let short = Error::invalid("driver name", "a\"b", "bad").to_string();
        assert_eq!(short, "invalid driver name \"a\\\"b\": bad");
    }
}
