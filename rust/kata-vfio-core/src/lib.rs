//! kata-vfio-core: the host side of VFIO passthrough, in plain Rust (no Python).
//!
//! Facts are read from sysfs/devfs into immutable snapshots ([`sysfs::scan`]); the group
//! rules ([`iommu`]) and device-node resolution ([`devnode`]) work on those snapshots. Every
//! path under a root the caller gives is resolved beneath it ([`beneath`]), for the scan and
//! for binding alike.

pub mod bdf;
pub mod beneath;
pub mod bind;
pub mod devnode;
pub mod error;
pub mod host;
pub mod iommu;
pub mod pci;
pub mod status;
pub mod sysfs;
pub mod uevent;
pub mod vfio;

pub use bdf::Bdf;
pub use error::{Error, Remedy, Result};
pub use host::Host;
pub use sysfs::{scan, ScanOptions};
