//! Parsers for the text formats of PCI sysfs attributes. Pure functions: bad text gives
//! `None`, never a panic.

use crate::pci::Bar;

/// What one `uevent` read gives.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub driver: Option<String>,
    pub class_code: Option<u32>,
    pub vendor: Option<u16>,
    pub device: Option<u16>,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
}

/// Parses a PCI device's `uevent` (`DRIVER=`, `PCI_CLASS=`, `PCI_ID=`, `PCI_SUBSYS_ID=`),
/// given untrimmed. `None` unless the text is whole: the kernel writes `DRIVER=` first (only
/// when bound) and the PCI lines after it, `MODALIAS=` last, each ending in a newline; an
/// empty or cut-off file says nothing, not "no driver".
pub fn parse_uevent(text: &str) -> Option<Uevent> {
    let mut out = Uevent::default();
    let mut whole = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "DRIVER" if !value.is_empty() => out.driver = Some(value.to_owned()),
            "PCI_CLASS" => {
                out.class_code = u32::from_str_radix(value, 16)
                    .ok()
                    .filter(|c| *c <= 0xff_ffff);
            }
            "PCI_ID" => (out.vendor, out.device) = parse_id_pair(value),
            "PCI_SUBSYS_ID" => (out.subsystem_vendor, out.subsystem_device) = parse_id_pair(value),
            "MODALIAS" => whole = parse_modalias(value).class_code.is_some(),
            _ => {}
        }
    }
    let complete = out.vendor.is_some() && out.device.is_some() && out.class_code.is_some();
    (whole && complete && text.ends_with('\n')).then_some(out)
}

fn parse_id_pair(value: &str) -> (Option<u16>, Option<u16>) {
    match value.split_once(':') {
        Some((a, b)) => (parse_hex16(a), parse_hex16(b)),
        None => (None, None),
    }
}

fn parse_hex16(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 4 {
        return None;
    }
    u16::from_str_radix(text, 16).ok()
}

/// Parses `0x10de` (the form of `vendor`, `device`, `subsystem_*`, `class`, `revision`).
pub fn parse_hex_attr(text: &str) -> Option<u32> {
    let digits = text
        .trim()
        .strip_prefix("0x")
        .or_else(|| text.trim().strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// IDs and class from `modalias`: `pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00`.
/// The layout is fixed (the kernel prints it with `%08X` and `%02X`), so each field is read
/// at its position after its tag.
pub fn parse_modalias(text: &str) -> Uevent {
    fn take<'a>(rest: &'a str, tag: &str, width: usize) -> Option<(u32, &'a str)> {
        let digits = rest.strip_prefix(tag)?;
        let value = u32::from_str_radix(digits.get(..width)?, 16).ok()?;
        Some((value, digits.get(width..)?))
    }
    let mut out = Uevent::default();
    let Some(rest) = text.trim().strip_prefix("pci:") else {
        return out;
    };
    let Some((vendor, rest)) = take(rest, "v", 8) else {
        return out;
    };
    let Some((device, rest)) = take(rest, "d", 8) else {
        return out;
    };
    out.vendor = u16::try_from(vendor).ok();
    out.device = u16::try_from(device).ok();
    let Some((sv, rest)) = take(rest, "sv", 8) else {
        return out;
    };
    let Some((sd, rest)) = take(rest, "sd", 8) else {
        return out;
    };
    out.subsystem_vendor = u16::try_from(sv).ok();
    out.subsystem_device = u16::try_from(sd).ok();
    let class = (|| {
        let (base, rest) = take(rest, "bc", 2)?;
        let (sub, rest) = take(rest, "sc", 2)?;
        let (prog, _) = take(rest, "i", 2)?;
        Some(base << 16 | sub << 8 | prog)
    })();
    out.class_code = class;
    out
}

/// `numa_node`: -1 (or any negative value) means none.
pub fn parse_numa_node(text: &str) -> Option<u32> {
    let value: i64 = text.trim().parse().ok()?;
    u32::try_from(value).ok()
}

/// `driver_override`: `(null)` or empty means unset.
pub fn parse_driver_override(text: &str) -> Option<String> {
    let value = text.trim();
    if value.is_empty() || value == "(null)" {
        None
    } else {
        Some(value.to_owned())
    }
}

/// A decimal count such as `sriov_totalvfs`.
pub fn parse_count(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

/// The `flags` bits of `resource` lines the core uses (include/linux/ioport.h).
mod ioresource {
    pub const IO: u64 = 0x0000_0100;
    pub const MEM: u64 = 0x0000_0200;
    pub const PREFETCH: u64 = 0x0000_2000;
    pub const MEM_64: u64 = 0x0010_0000;
}

/// How many BAR lines `resource` starts with (the ROM, bridge windows and SR-IOV BARs follow).
const BAR_LINES: usize = 6;

/// BARs 0-5 from `resource` (`0x<start> 0x<end> 0x<flags>` per line); empty BARs are left
/// out. `None` when the text is not what the kernel writes: fewer than six lines, a line that
/// is not three hex numbers, an end below its start, or a size that does not fit 64 bits (an
/// unknown BAR set is not "no BARs": BAR sizes feed the guest's 64-bit window).
pub fn parse_resource(text: &str) -> Option<Vec<Bar>> {
    let mut bars = Vec::new();
    let mut lines = 0;
    for (index, line) in text.lines().take(BAR_LINES).enumerate() {
        lines += 1;
        let mut fields = line.split_whitespace().map(parse_hex64);
        let (Some(Some(start)), Some(Some(end)), Some(Some(flags)), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        if end == 0 || flags & (ioresource::IO | ioresource::MEM) == 0 {
            continue;
        }
        // `0x0 0xffffffffffffffff` would be 2^64 bytes: no BAR is that large.
        let size = end.checked_sub(start)?.checked_add(1)?;
        bars.push(Bar {
            index: u8::try_from(index).ok()?,
            start,
            size,
            is_io: flags & ioresource::IO != 0,
            is_64bit: flags & ioresource::MEM_64 != 0,
            prefetchable: flags & ioresource::PREFETCH != 0,
        });
    }
    (lines == BAR_LINES).then_some(bars)
}

/// `0x` and 1 to 16 hex digits (what `%#018llx` prints, and no more).
fn parse_hex64(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// `current_link_width`: a decimal number; `0` and unparsable text mean unknown.
pub fn parse_link_width(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|w| *w > 0)
}

/// `current_link_speed`: kept as printed, except the kernel's "Unknown" forms.
pub fn parse_link_speed(text: &str) -> Option<String> {
    let value = text.trim();
    if value.is_empty() || value.starts_with("Unknown") {
        None
    } else {
        Some(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uevent_fields() {
        let text = "DRIVER=vfio-pci\nPCI_CLASS=30200\nPCI_ID=10DE:2330\nPCI_SUBSYS_ID=10DE:16C1\nPCI_SLOT_NAME=0000:01:00.0\nMODALIAS=pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00\n";
        let ev = parse_uevent(text).unwrap();
        assert_eq!(ev.driver.as_deref(), Some("vfio-pci"));
        assert_eq!(ev.class_code, Some(0x030200));
        assert_eq!((ev.vendor, ev.device), (Some(0x10de), Some(0x2330)));
        assert_eq!(
            (ev.subsystem_vendor, ev.subsystem_device),
            (Some(0x10de), Some(0x16c1))
        );
        // Empty or cut short: no verdict on the driver either way.
        assert_eq!(parse_uevent(""), None);
        assert_eq!(parse_uevent("PCI_CLASS=60400\n"), None);
        let cut = &text[..text.find("MODALIAS").unwrap() + 20];
        assert_eq!(parse_uevent(cut), None);
        assert_eq!(parse_uevent(text.trim_end()), None);
        let unbound = &text[text.find("PCI_CLASS").unwrap()..];
        assert_eq!(parse_uevent(unbound).unwrap().driver, None);
    }

    #[test]
    fn modalias_fields() {
        let ev = parse_modalias("pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00\n");
        assert_eq!((ev.vendor, ev.device), (Some(0x10de), Some(0x2330)));
        assert_eq!(
            (ev.subsystem_vendor, ev.subsystem_device),
            (Some(0x10de), Some(0x16c1))
        );
        assert_eq!(ev.class_code, Some(0x030200));
        assert_eq!(parse_modalias("garbage"), Uevent::default());
    }

    #[test]
    fn small_attributes() {
        assert_eq!(parse_hex_attr("0x10de\n"), Some(0x10de));
        assert_eq!(parse_hex_attr("10de"), None);
        assert_eq!(parse_numa_node("-1\n"), None);
        assert_eq!(parse_numa_node("1\n"), Some(1));
        assert_eq!(parse_driver_override("(null)\n"), None);
        assert_eq!(
            parse_driver_override("vfio-pci\n").as_deref(),
            Some("vfio-pci")
        );
        assert_eq!(parse_link_speed("Unknown\n"), None);
        assert_eq!(
            parse_link_speed("32.0 GT/s PCIe\n").as_deref(),
            Some("32.0 GT/s PCIe")
        );
        assert_eq!(parse_link_width("0"), None);
    }

    #[test]
    fn resource_bars() {
        let text = "0x00000000fb000000 0x00000000fbffffff 0x0000000000040200\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x0000200000000000 0x0000200fffffffff 0x000000000014220c\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x000000000000e000 0x000000000000e07f 0x0000000000040101\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x00000000fc000000 0x00000000fc07ffff 0x0000000000046200\n";
        let bars = parse_resource(text).unwrap();
        assert_eq!(bars.len(), 3);
        assert_eq!(bars[0].size, 16 << 20);
        assert!(!bars[0].is_64bit && !bars[0].prefetchable && !bars[0].is_io);
        assert_eq!(bars[1].index, 2);
        assert_eq!(bars[1].size, 64 << 30);
        assert!(bars[1].is_64bit && bars[1].prefetchable);
        assert!(bars[2].is_io);
        assert_eq!(bars[2].size, 0x80);
    }

    #[test]
    fn resource_that_is_not_the_kernels_is_unknown() {
        let empty = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
        assert_eq!(parse_resource(&empty.repeat(13)), Some(vec![]));
        // 2^64 bytes: overflow, not a panic.
        let huge = format!("0x0 0xffffffffffffffff 0x200\n{}", empty.repeat(12));
        assert_eq!(parse_resource(&huge), None);
        let backwards = format!("0x2000 0x1000 0x200\n{}", empty.repeat(12));
        assert_eq!(parse_resource(&backwards), None);
        let garbage = format!("0x1000 zz 0x200\n{}", empty.repeat(12));
        assert_eq!(parse_resource(&garbage), None);
        assert_eq!(parse_resource(&empty.repeat(3)), None); // truncated
        let shifted = format!("\n{}", empty.repeat(13));
        assert_eq!(parse_resource(&shifted), None); // line N is BAR N
        assert_eq!(parse_resource(""), None);
        let extra = format!("0x0 0xfff 0x200 0x1\n{}", empty.repeat(12));
        assert_eq!(parse_resource(&extra), None);
        let max = format!("0x0 0xfffffffffffffffe 0x200\n{}", empty.repeat(12));
        assert_eq!(parse_resource(&max).unwrap()[0].size, u64::MAX);
    }
}
