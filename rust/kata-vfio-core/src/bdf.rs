//! PCI addresses (`domain:bus:device.function`): a strict parser and canonical formatting.
//!
//! Anything that comes from outside (a CLI argument, an annotation, a sysfs directory name) is
//! parsed here before it is ever joined into a path, so `0000:00:01.0/../..` cannot escape.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A PCI function address. Ordering is numeric (domain, bus, device, function).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub domain: u32,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Bdf {
    /// Largest device number (5 bits).
    pub const MAX_DEVICE: u8 = 0x1f;
    /// Largest function number (3 bits; ARI is still written as `dd.f`).
    pub const MAX_FUNCTION: u8 = 7;

    /// Builds an address, checking the field ranges.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Result<Self> {
        if device > Self::MAX_DEVICE || function > Self::MAX_FUNCTION {
            return Err(Error::invalid_bdf(
                format!("{domain:04x}:{bus:02x}:{device:02x}.{function:x}"),
                "device must be 00-1f and function 0-7",
            ));
        }
        Ok(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// Parses `DDDD:BB:DD.F` (domain of 4 to 8 hex digits) or the short form `BB:DD.F`
    /// (domain 0). Hex digits may be upper case; nothing else is accepted: no spaces, no
    /// separators beyond the two colons and the dot, no trailing text.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid_bdf(text.to_owned(), why);
        if text.is_empty() {
            return Err(bad("the address is empty"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad(
                "only hex digits, ':' and '.' are allowed (form DDDD:BB:DD.F)",
            ));
        }
        let (head, function) = text
            .rsplit_once('.')
            .ok_or_else(|| bad("missing '.' before the function number"))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, device] => ("0", *bus, *device),
            [domain, bus, device] => (*domain, *bus, *device),
            _ => return Err(bad("expected DDDD:BB:DD.F or BB:DD.F")),
        };
        if parts.len() == 3 && !(4..=8).contains(&domain.len()) {
            return Err(bad("the domain must have 4 to 8 hex digits"));
        }
        if bus.len() != 2 || device.len() != 2 || function.len() != 1 {
            return Err(bad(
                "bus and device need 2 hex digits and the function 1 digit",
            ));
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).map_err(|_| bad("not a hex number"));
        let domain = hex(domain)?;
        let bus = u8::try_from(hex(bus)?).map_err(|_| bad("bus out of range"))?;
        let device = u8::try_from(hex(device)?).map_err(|_| bad("device out of range"))?;
        let function = u8::try_from(hex(function)?).map_err(|_| bad("function out of range"))?;
        if device > Self::MAX_DEVICE {
            return Err(bad("the device number must be 00-1f"));
        }
        if function > Self::MAX_FUNCTION {
            return Err(bad("the function number must be 0-7"));
        }
        Ok(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// The address of function 0 of the same device (slot).
    #[must_use]
    pub fn slot_function0(self) -> Self {
        Self {
            function: 0,
            ..self
        }
    }

    /// `devfn` as the kernel packs it (device << 3 | function).
    #[must_use]
    pub fn devfn(self) -> u8 {
        (self.device << 3) | self.function
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for Bdf {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Finds the last PCI address among the `/`-separated components of a sysfs path such as
/// `../../devices/pci0000:00/0000:00:01.0/0000:01:00.0`. Components that are not addresses
/// (`pci0000:00`, `vfio-dev`) are skipped.
pub fn last_bdf_in_path(path: &str) -> Option<Bdf> {
    path.rsplit('/')
        .find_map(|component| Bdf::parse(component).ok())
}

/// Every PCI address among the components of a sysfs path, in path order (root first).
pub fn bdfs_in_path(path: &str) -> Vec<Bdf> {
    path.split('/')
        .filter_map(|component| Bdf::parse(component).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_short_forms() {
        let full = Bdf::parse("0000:01:00.0").unwrap();
        assert_eq!(
            full,
            Bdf {
                domain: 0,
                bus: 1,
                device: 0,
                function: 0
            }
        );
        assert_eq!(Bdf::parse("01:00.0").unwrap(), full);
        assert_eq!(
            Bdf::parse("0000:AF:1F.7").unwrap().to_string(),
            "0000:af:1f.7"
        );
    }

    #[test]
    fn keeps_large_domains() {
        let bdf = Bdf::parse("10000:e1:00.0").unwrap();
        assert_eq!(bdf.domain, 0x10000);
        assert_eq!(bdf.to_string(), "10000:e1:00.0");
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            " 0000:01:00.0",
            "0000:01:00.0 ",
            "0000:01:00.0/../..",
            "0000:01:00.8",
            "0000:01:20.0",
            "0000:01:00",
            "000:01:00.0",
            "0000:1:00.0",
            "0000:01:00.00",
            "0000:01:00:00.0",
            "g000:01:00.0",
            "123456789:01:00.0",
            "0000:01.00.0",
        ] {
            assert!(Bdf::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn error_names_the_input() {
        let err = Bdf::parse("0000:01:00.9").unwrap_err();
        assert!(err.to_string().contains("0000:01:00.9"), "{err}");
    }

    #[test]
    fn orders_numerically() {
        let mut list: Vec<Bdf> = [
            "0000:10:00.0",
            "0000:02:00.0",
            "0001:00:00.0",
            "0000:02:00.1",
        ]
        .iter()
        .map(|s| Bdf::parse(s).unwrap())
        .collect();
        list.sort();
        let text: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "0000:02:00.0",
                "0000:02:00.1",
                "0000:10:00.0",
                "0001:00:00.0"
            ]
        );
    }

    #[test]
    fn finds_addresses_in_paths() {
        let path = "../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:08.0";
        assert_eq!(last_bdf_in_path(path).unwrap().to_string(), "0000:02:08.0");
        let all: Vec<String> = bdfs_in_path(path).iter().map(ToString::to_string).collect();
        assert_eq!(all, ["0000:00:01.0", "0000:01:00.0", "0000:02:08.0"]);
        assert!(last_bdf_in_path("../../devices/virtual/misc").is_none());
    }
}
