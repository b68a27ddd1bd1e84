//! Reading the PCI part of sysfs into a [`Host`](crate::host::Host) snapshot, every path
//! resolved beneath the root given ([`crate::beneath`]), every unreadable fact recorded ([`problem`]).

pub mod attrs;
pub mod device;
pub mod io;
pub mod problem;
mod scan;

pub use scan::{read_one_device, scan, ScanOptions};
