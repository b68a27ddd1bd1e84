//! What root confinement costs binding: reading `bus/pci/devices/<bdf>/driver_override` (a
//! `..`-laden relative link, then an attribute) for every device of a sysfs tree, three ways:
//! a plain `openat` from the root's fd (follows anything, the old way), `openat2` with
//! `RESOLVE_BENEATH` (what the scan and binding use), and the component walk (its fallback on kernels
//! before 5.6). All three read the same bytes; the ratios are to the plain open.
//!
//! Usage: `beneath_cost SYSFS_ROOT [ROUNDS]`. Prints `devices=N plain_ns=.. beneath_ns=..
//! walk_ns=.. beneath/plain=.. walk/plain=..`, each the best of ROUNDS full passes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use kata_vfio_core::beneath::{open_beneath, walk_beneath, ATTR_MAX};
use rustix::fs::{self as rfs, Mode, OFlags};

type Opener = fn(BorrowedFd<'_>, &Path) -> std::io::Result<OwnedFd>;

const FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

fn plain(root: BorrowedFd<'_>, rel: &Path) -> std::io::Result<OwnedFd> {
    Ok(rfs::openat(root, rel, FLAGS, Mode::empty())?)
}

fn beneath(root: BorrowedFd<'_>, rel: &Path) -> std::io::Result<OwnedFd> {
    open_beneath(root, rel, FLAGS, Mode::empty())
}

fn walk(root: BorrowedFd<'_>, rel: &Path) -> std::io::Result<OwnedFd> {
    walk_beneath(root, rel, FLAGS, Mode::empty())
}

/// The best time of `rounds` passes reading every path; also the bytes read (all ways agree).
fn best(open: Opener, root: BorrowedFd<'_>, paths: &[PathBuf], rounds: u32) -> (u128, usize) {
    let mut buf = [0u8; ATTR_MAX];
    let mut best = u128::MAX;
    let mut bytes = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        bytes = 0;
        for rel in paths {
            if let Ok(fd) = open(root, rel) {
                bytes += rustix::io::read(fd.as_fd(), &mut buf).unwrap_or(0);
            }
        }
        best = best.min(started.elapsed().as_nanos());
    }
    (best, bytes)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(root) = args.get(1) else {
        eprintln!("usage: beneath_cost SYSFS_ROOT [ROUNDS]");
        return ExitCode::from(2);
    };
    let rounds = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(20);
    let Ok(dir) = rfs::open(
        root.as_str(),
        OFlags::PATH | OFlags::DIRECTORY,
        Mode::empty(),
    ) else {
        eprintln!("cannot open {root}");
        return ExitCode::from(2);
    };
    let devices = Path::new(root).join("bus/pci/devices");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(devices)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    Path::new("bus/pci/devices")
                        .join(e.file_name())
                        .join("driver_override")
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let (plain_ns, a) = best(plain, dir.as_fd(), &paths, rounds);
    let (beneath_ns, b) = best(beneath, dir.as_fd(), &paths, rounds);
    let (walk_ns, c) = best(walk, dir.as_fd(), &paths, rounds);
    if a != b || b != c {
        eprintln!("the three ways read different bytes: {a} {b} {c}");
        return ExitCode::from(1);
    }
    #[allow(clippy::cast_precision_loss)] // ratios of nanosecond counts
    let ratio = |x: u128| x as f64 / plain_ns.max(1) as f64;
    println!(
        "devices={} plain_ns={plain_ns} beneath_ns={beneath_ns} walk_ns={walk_ns} \
         beneath/plain={:.2} walk/plain={:.2}",
        paths.len(),
        ratio(beneath_ns),
        ratio(walk_ns)
    );
    ExitCode::SUCCESS
}
