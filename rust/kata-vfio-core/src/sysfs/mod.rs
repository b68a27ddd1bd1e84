//! Reading the PCI part of sysfs into a [`Host`](crate::host::Host) snapshot.

pub mod attrs;
pub mod device;
pub mod io;
mod scan;

pub use scan::{read_one_device, scan, ScanOptions};
