//! kata-vfio-core: the host side of VFIO passthrough, in plain Rust (no Python).
//!
//! Facts are read from sysfs/devfs into immutable snapshots ([`sysfs::scan`]); the group
//! rules ([`iommu`]) and device-node resolution ([`devnode`]) work on those snapshots.

pub mod bdf;
pub mod error;

pub use bdf::Bdf;
pub use error::{Error, Result};
