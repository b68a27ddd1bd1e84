//! Driver and module names: validated before they are joined into a sysfs path, written to
//! `driver_override`, or passed to modprobe.

use std::fmt;

use crate::error::{Error, Result};

/// The longest name accepted (kernel driver names are far shorter).
const MAX_LEN: usize = 128;

fn check_name(what: &'static str, text: &str, extra: &[u8]) -> Result<()> {
    let bad = |why: &str| Error::invalid(what, text, why);
    if text.is_empty() {
        return Err(bad("the name is empty"));
    }
    if text.len() > MAX_LEN {
        return Err(bad("the name is too long"));
    }
    if text.contains("..") {
        return Err(bad("'..' is not allowed"));
    }
    if !text.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("the name must start with a letter or digit"));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b))
    {
        return Err(bad(
            "only letters, digits, '_' and '-' are allowed (no '/', no spaces)",
        ));
    }
    Ok(())
}

/// A PCI driver name as it appears under `/sys/bus/pci/drivers` (`vfio-pci`, `e1000e`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DriverName(String);

impl DriverName {
    /// The generic VFIO driver.
    pub const VFIO_PCI: &'static str = "vfio-pci";

    /// Validates a driver name: non-empty, ASCII letters, digits, `_`, `-`, `.`, `+`, no
    /// `/`, no `..`, no whitespace.
    pub fn parse(text: &str) -> Result<Self> {
        check_name("driver name", text, b".+")?;
        Ok(Self(text.to_owned()))
    }

    /// `vfio-pci`.
    pub fn vfio_pci() -> Self {
        Self(Self::VFIO_PCI.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// vfio-pci itself or a vfio variant driver (`*_vfio_pci`, `*-vfio-pci`).
    pub fn is_vfio(&self) -> bool {
        is_vfio_driver(&self.0)
    }

    /// The module that provides it, as modprobe takes it (`vfio-pci` -> `vfio_pci`).
    pub fn module(&self) -> ModuleName {
        ModuleName(self.0.replace('-', "_"))
    }
}

impl fmt::Display for DriverName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a driver name is vfio-pci or a vfio variant driver.
pub fn is_vfio_driver(name: &str) -> bool {
    name == DriverName::VFIO_PCI || name.ends_with("_vfio_pci") || name.ends_with("-vfio-pci")
}

/// A kernel module name (`vfio_pci`, `nvgrace_gpu_vfio_pci`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleName(String);

impl ModuleName {
    /// Validates a module name: ASCII letters, digits, `_` and `-` only.
    pub fn parse(text: &str) -> Result<Self> {
        check_name("module name", text, b"")?;
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PCI driver the module registers, by the kernel's naming: `vfio_pci` registers
    /// `vfio-pci`; variant drivers use their module name (`KBUILD_MODNAME`).
    pub fn default_driver(&self) -> DriverName {
        if self.0 == "vfio_pci" {
            DriverName::vfio_pci()
        } else {
            DriverName(self.0.clone())
        }
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_driver_names() {
        for name in [
            "vfio-pci",
            "e1000e",
            "snd_hda_intel",
            "pci-stub",
            "mlx5_core",
            "nvgrace_gpu_vfio_pci",
            "i801_smbus",
        ] {
            assert!(DriverName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_path_tricks_and_whitespace() {
        for bad in [
            "",
            "..",
            "../vfio-pci",
            "vfio-pci/..",
            "a/b",
            "vfio pci",
            "vfio-pci\n",
            "-x",
            ".hidden",
            "a..b",
            "\u{e9}",
        ] {
            assert!(DriverName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ModuleName::parse("vfio.pci").is_err());
    }

    #[test]
    fn knows_vfio_drivers_and_their_modules() {
        assert!(DriverName::vfio_pci().is_vfio());
        assert!(is_vfio_driver("nvgrace_gpu_vfio_pci"));
        assert!(!is_vfio_driver("pci-stub"));
        assert_eq!(DriverName::vfio_pci().module().as_str(), "vfio_pci");
        let module = ModuleName::parse("vfio_pci").expect("valid");
        assert_eq!(module.default_driver().as_str(), "vfio-pci");
        let variant = ModuleName::parse("mlx5_vfio_pci").expect("valid");
        assert_eq!(variant.default_driver().as_str(), "mlx5_vfio_pci");
    }
}
