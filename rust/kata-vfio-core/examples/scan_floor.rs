//! The floor for the scan benchmark: the syscalls the scan's fields need, with no parsing and
//! no result building. Per device: `readlinkat` of the `bus/pci/devices` link (its target is
//! the chain of upstream bridges), an `openat2(RESOLVE_BENEATH)` of the device directory at
//! that target (confined to the sysfs root), one read each of `uevent`, `revision`,
//! `numa_node` and `driver_override` (open without following links or blocking, `fstat`: a
//! regular file only, read, close), `fstatat` of `config` (PCIe or not) and an `openat` of
//! `sriov_totalvfs` (which only PFs have: the SR-IOV role). Per IOMMU group: the kernel's
//! member list, `kernel/iommu_groups/N/devices` (open, `getdents`, close), which gives each
//! device its group (no `iommu_group` readlink).
//!
//! Usage: `scan_floor SYSFS_ROOT [ITERATIONS] [THREADS]`. Prints one line,
//! `floor devices=N threads=T best_ns=...`, the best wall time of ITERATIONS full walks.
//! THREADS > 1 splits the device list into that many chunks walked by scoped threads.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};

const ATTRS: [&str; 4] = ["uevent", "revision", "numa_node", "driver_override"];

fn open_dir(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Reads one attribute as the scan must (no link followed, never blocking, a regular file
/// only); returns the byte count (0 when it cannot be read).
fn read_attr(dir: BorrowedFd<'_>, name: &str, buf: &mut [u8]) -> usize {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let Ok(fd) = rfs::openat(dir, name, flags, Mode::empty()) else {
        return 0;
    };
    if !rfs::fstat(&fd).is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode).is_file()) {
        return 0;
    }
    rustix::io::read(&fd, buf).unwrap_or(0)
}

/// `../../../devices/pci0000:00/0000:00:01.0` -> `devices/pci0000:00/0000:00:01.0`.
fn below_root(target: &[u8]) -> String {
    let text = String::from_utf8_lossy(target);
    text.split('/')
        .filter(|c| !c.is_empty() && *c != "..")
        .collect::<Vec<_>>()
        .join("/")
}

/// Walks some devices; the returned sum only keeps the work from being optimised away.
fn walk(root: BorrowedFd<'_>, devices: BorrowedFd<'_>, names: &[String]) -> usize {
    let mut buf = [0u8; 4096];
    let mut link = [0u8; 256];
    let mut total = 0usize;
    for name in names {
        let Ok(target) = rfs::readlinkat_raw(devices, name.as_str(), &mut link[..]) else {
            continue;
        };
        total += target;
        // O_PATH, as the scan does: the directory is only an anchor for the *at calls, opened
        // beneath the sysfs root.
        let Ok(dir) = rfs::openat2(
            root,
            below_root(&link[..target]),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) else {
            continue;
        };
        let dir = dir.as_fd();
        for attr in ATTRS {
            total += read_attr(dir, attr, &mut buf);
        }
        total += rfs::statat(dir, "config", AtFlags::SYMLINK_NOFOLLOW)
            .map_or(0, |st| usize::try_from(st.st_size).unwrap_or(0));
        total += read_attr(dir, "sriov_totalvfs", &mut buf);
    }
    total
}

fn list(devices: BorrowedFd<'_>) -> rustix::io::Result<Vec<String>> {
    names_in(rfs::Dir::read_from(devices)?)
}

/// Lists a directory through the descriptor it was opened with (no second open).
fn list_owned(dir: OwnedFd) -> rustix::io::Result<Vec<String>> {
    names_in(rfs::Dir::new(dir)?)
}

fn names_in(dir: rfs::Dir) -> rustix::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy();
        if !name.starts_with('.') {
            names.push(name.into_owned());
        }
    }
    Ok(names)
}

/// One full scan: open the devices directory, list it, walk every device.
fn scan_once(root: BorrowedFd<'_>, threads: usize) -> rustix::io::Result<(usize, usize)> {
    let devices = open_dir(root, "bus/pci/devices")?;
    let names = list(devices.as_fd())?;
    let listed = groups(root)?;
    if threads <= 1 {
        return Ok((names.len(), listed + walk(root, devices.as_fd(), &names)));
    }
    let chunk = names.len().div_ceil(threads).max(1);
    let fd = devices.as_fd();
    let total = std::thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(chunk)
            .map(|part| scope.spawn(move || walk(root, fd, part)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(0))
            .sum::<usize>()
    });
    Ok((names.len(), listed + total))
}

/// The kernel's group member lists (`kernel/iommu_groups/N/devices`); returns the number of
/// members seen.
fn groups(root: BorrowedFd<'_>) -> rustix::io::Result<usize> {
    let Ok(dir) = open_dir(root, "kernel/iommu_groups") else {
        return Ok(0);
    };
    let mut members = 0;
    for group in list(dir.as_fd())? {
        let Ok(devices) = rfs::openat2(
            dir.as_fd(),
            format!("{group}/devices"),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) else {
            continue;
        };
        members += list_owned(devices)?.len();
    }
    Ok(members)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(root_path) = args.get(1) else {
        eprintln!("usage: scan_floor SYSFS_ROOT [ITERATIONS] [THREADS]");
        return ExitCode::from(2);
    };
    let iterations: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let threads: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let root = match rfs::open(
        root_path.as_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(err) => {
            eprintln!("scan_floor: cannot open {root_path}: {err}");
            return ExitCode::from(1);
        }
    };
    let mut best = Duration::MAX;
    let mut devices = 0;
    let mut checksum = 0;
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        match scan_once(root.as_fd(), threads) {
            Ok((count, sum)) => {
                devices = count;
                checksum = sum;
            }
            Err(err) => {
                eprintln!("scan_floor: {root_path}/bus/pci/devices: {err}");
                return ExitCode::from(1);
            }
        }
        best = best.min(start.elapsed());
    }
    println!(
        "floor devices={devices} threads={threads} best_ns={} checksum={checksum}",
        best.as_nanos()
    );
    ExitCode::SUCCESS
}
