//! Kernel uevents over netlink (`NETLINK_KOBJECT_UEVENT`), for agents that watch the host.
//!
//! The kernel broadcasts one datagram per event on multicast group 1: a header
//! `ACTION@DEVPATH`, then `KEY=VALUE` strings, each NUL-terminated (`ACTION`, `DEVPATH`,
//! `SUBSYSTEM`, `SEQNUM`, and for PCI `DRIVER`, `PCI_SLOT_NAME`, ...). A driver bind or unbind
//! arrives as `bind@/devices/pci0000:00/0000:00:01.0` with `SUBSYSTEM=pci`; a VFIO group node
//! as `add@/devices/virtual/vfio/12` with `SUBSYSTEM=vfio`.
//!
//! Only datagrams whose sender is the kernel (netlink port 0) are accepted: udevd's re-sent
//! copies (group 2, `libudev` header) and anything a process sends are dropped. When the socket
//! buffer overflows the kernel drops events and the next read fails with `ENOBUFS`; the batch
//! then says `overflowed`, and the caller must rescan instead of trusting the stream.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::sockopt::{set_socket_recv_buffer_size, set_socket_recv_buffer_size_force};
use rustix::net::{bind, recvfrom, socket_with, AddressFamily, RecvFlags, SocketFlags, SocketType};

use crate::error::{Error, Result};

/// What the errors name as the "path" of the socket.
const SOCKET_NAME: &str = "NETLINK_KOBJECT_UEVENT";
/// The kernel's multicast group for uevents (udevd re-broadcasts on group 2).
const KERNEL_GROUP: u32 = 1;
/// Larger than any uevent: the kernel builds them in a 2 KiB environment buffer.
const DATAGRAM_MAX: usize = 8192;
/// Socket receive buffer asked for, so bursts (a bind of many functions) are not dropped.
const RECV_BUFFER: usize = 4 << 20;
/// At most this many datagrams per [`Monitor::receive`] call, so one call stays short.
const BATCH_MAX: usize = 4096;

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: Option<String>,
    pub seqnum: Option<u64>,
    /// Every `KEY=VALUE` pair in the order the kernel sent them (ACTION, DEVPATH, ... too).
    pub env: Vec<(String, String)>,
}

impl Uevent {
    /// The value of `key`, if the event has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Events read in one call, and whether the kernel dropped some before them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub events: Vec<Uevent>,
    /// The socket buffer overflowed (`ENOBUFS`): events were lost, rescan.
    pub overflowed: bool,
}

/// Parses one kernel uevent datagram. `None` for anything that is not one: a `libudev`
/// message, a header without `@`, a header that disagrees with `ACTION`/`DEVPATH`, a field
/// without `=`, text that is not UTF-8, a `SEQNUM` that is not a number.
pub fn parse(datagram: &[u8]) -> Option<Uevent> {
    let mut fields = datagram.split(|&b| b == 0);
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    if action.is_empty() || !devpath.starts_with('/') {
        return None;
    }
    let mut env = Vec::new();
    for field in fields {
        if field.is_empty() {
            continue; // the trailing NUL
        }
        let text = std::str::from_utf8(field).ok()?;
        let (key, value) = text.split_once('=')?;
        if key.is_empty() {
            return None;
        }
        env.push((key.to_owned(), value.to_owned()));
    }
    let event = Uevent {
        action: action.to_owned(),
        devpath: devpath.to_owned(),
        subsystem: None,
        seqnum: None,
        env,
    };
    if event.get("ACTION") != Some(action) || event.get("DEVPATH") != Some(devpath) {
        return None;
    }
    let seqnum = match event.get("SEQNUM") {
        Some(text) => Some(parse_seqnum(text)?),
        None => None,
    };
    let subsystem = event.get("SUBSYSTEM").map(str::to_owned);
    Some(Uevent {
        subsystem,
        seqnum,
        ..event
    })
}

fn parse_seqnum(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A netlink socket subscribed to the kernel's uevents, optionally keeping only some
/// subsystems (`pci`, `vfio`, ...). Non-blocking; [`Monitor::receive`] waits with a timeout.
#[derive(Debug)]
pub struct Monitor {
    fd: OwnedFd,
    subsystems: Option<Vec<String>>,
}

impl Monitor {
    /// Opens and binds the socket. Fails with the errno when netlink is not available (a
    /// sandbox without `AF_NETLINK`) or the kernel refuses the subscription.
    pub fn open(subsystems: Option<Vec<String>>) -> Result<Self> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )
        .map_err(|e| io_error("socket", e))?;
        // The forced size needs CAP_NET_ADMIN; the plain one is capped by rmem_max.
        if set_socket_recv_buffer_size_force(&fd, RECV_BUFFER).is_err() {
            let _ = set_socket_recv_buffer_size(&fd, RECV_BUFFER);
        }
        bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP)).map_err(|e| io_error("bind", e))?;
        Ok(Self { fd, subsystems })
    }

    /// Waits up to `timeout` (None: forever) for events, then drains every pending one.
    /// An empty batch means the timeout passed. `EINTR` ends the wait early (empty batch), so
    /// a signal handler gets to run.
    pub fn receive(&self, timeout: Option<Duration>) -> Result<Batch> {
        if !self.wait(timeout)? {
            return Ok(Batch::default());
        }
        let mut batch = Batch::default();
        let mut buf = vec![0u8; DATAGRAM_MAX];
        for _ in 0..BATCH_MAX {
            match recvfrom(&self.fd, &mut buf[..], RecvFlags::TRUNC) {
                Ok((_, full_len, sender)) => {
                    if full_len > DATAGRAM_MAX || !from_kernel(sender) {
                        continue;
                    }
                    if let Some(event) = parse(&buf[..full_len]) {
                        if self.wanted(&event) {
                            batch.events.push(event);
                        }
                    }
                }
                Err(Errno::AGAIN | Errno::INTR) => break,
                Err(Errno::NOBUFS) => batch.overflowed = true,
                Err(e) => return Err(io_error("recvfrom", e)),
            }
        }
        Ok(batch)
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        let spec = timeout.map(|t| Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, spec.as_ref()) {
            Ok(ready) => Ok(ready > 0),
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(io_error("poll", e)),
        }
    }

    fn wanted(&self, event: &Uevent) -> bool {
        match (&self.subsystems, &event.subsystem) {
            (None, _) => true,
            (Some(list), Some(subsystem)) => list.iter().any(|s| s == subsystem),
            (Some(_), None) => false,
        }
    }

    /// The socket, for callers that poll it themselves.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn from_kernel(sender: Option<rustix::net::SocketAddrAny>) -> bool {
    sender
        .and_then(|addr| SocketAddrNetlink::try_from(addr).ok())
        .is_some_and(|addr| addr.pid() == 0)
}

fn io_error(op: &'static str, errno: Errno) -> Error {
    Error::io(op, SOCKET_NAME, std::io::Error::from(errno)).with_hint(
        "kernel uevents need a netlink socket in the host's network namespace \
         (hostNetwork: true); the agent still rescans periodically without them",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
        out
    }

    const BIND: &[&str] = &[
        "bind@/devices/pci0000:00/0000:00:02.0/0000:01:00.0",
        "ACTION=bind",
        "DEVPATH=/devices/pci0000:00/0000:00:02.0/0000:01:00.0",
        "SUBSYSTEM=pci",
        "DRIVER=vfio-pci",
        "PCI_CLASS=20000",
        "PCI_SLOT_NAME=0000:01:00.0",
        "MODALIAS=pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00",
        "SEQNUM=2411",
    ];

    #[test]
    fn parses_a_kernel_bind_event() {
        let event = parse(&datagram(BIND)).expect("valid event");
        assert_eq!(event.action, "bind");
        assert_eq!(
            event.devpath,
            "/devices/pci0000:00/0000:00:02.0/0000:01:00.0"
        );
        assert_eq!(event.subsystem.as_deref(), Some("pci"));
        assert_eq!(event.seqnum, Some(2411));
        assert_eq!(event.get("DRIVER"), Some("vfio-pci"));
        assert_eq!(event.get("PCI_SLOT_NAME"), Some("0000:01:00.0"));
        assert_eq!(event.env.len(), 8);
    }

    #[test]
    fn an_empty_value_is_kept() {
        let mut parts = BIND.to_vec();
        parts[4] = "DRIVER=";
        let event = parse(&datagram(&parts)).expect("valid event");
        assert_eq!(event.get("DRIVER"), Some(""));
    }

    #[test]
    fn refuses_what_is_not_a_kernel_uevent() {
        // udevd's own format starts with the "libudev" magic and a binary header.
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(&datagram(&["add/devices/x", "ACTION=add"])), None);
        assert_eq!(
            parse(&datagram(&["@/devices/x", "ACTION=", "DEVPATH=/devices/x"])),
            None
        );
        assert_eq!(
            parse(&datagram(&[
                "add@devices/x",
                "ACTION=add",
                "DEVPATH=devices/x"
            ])),
            None
        );
        // Header and fields disagree, or a field is missing.
        assert_eq!(
            parse(&datagram(&[
                "add@/devices/x",
                "ACTION=remove",
                "DEVPATH=/devices/x"
            ])),
            None
        );
        assert_eq!(
            parse(&datagram(&[
                "add@/devices/x",
                "ACTION=add",
                "DEVPATH=/devices/y"
            ])),
            None
        );
        assert_eq!(parse(&datagram(&["add@/devices/x", "ACTION=add"])), None);
        // A field without '=', an empty key, a bad SEQNUM, bytes that are not UTF-8.
        let mut parts = BIND.to_vec();
        parts[4] = "DRIVER";
        assert_eq!(parse(&datagram(&parts)), None);
        parts[4] = "=x";
        assert_eq!(parse(&datagram(&parts)), None);
        parts[4] = "SEQNUM=12a";
        assert_eq!(parse(&datagram(&parts[..5])), None);
        let mut bytes = datagram(BIND);
        bytes.extend_from_slice(b"X=\xff\0");
        assert_eq!(parse(&bytes), None);
    }

    #[test]
    fn seqnum_bounds() {
        assert_eq!(parse_seqnum("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_seqnum("18446744073709551616"), None);
        assert_eq!(parse_seqnum("000000000000000000001"), None);
        assert_eq!(parse_seqnum("+1"), None);
        assert_eq!(parse_seqnum(""), None);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix and single-byte corruption of a real event.
        let good = datagram(BIND);
        for end in 0..=good.len() {
            let _ = parse(&good[..end]);
        }
        for index in 0..good.len() {
            for byte in [0u8, b'=', b'@', 0xff, b'\n'] {
                let mut bad = good.clone();
                bad[index] = byte;
                let _ = parse(&bad);
            }
        }
    }

    #[test]
    fn filters_by_subsystem() {
        let event = parse(&datagram(BIND)).expect("valid event");
        let monitor = |subsystems: Option<Vec<String>>| Monitor {
            fd: rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY,
                rustix::fs::Mode::empty(),
            )
            .expect("open /dev/null"),
            subsystems,
        };
        assert!(monitor(None).wanted(&event));
        assert!(monitor(Some(vec!["vfio".into(), "pci".into()])).wanted(&event));
        assert!(!monitor(Some(vec!["block".into()])).wanted(&event));
    }

    #[test]
    fn open_and_time_out_where_netlink_exists() {
        // Containers may lack AF_NETLINK; then open must fail with an error, not panic.
        match Monitor::open(Some(vec!["pci".into()])) {
            Ok(monitor) => {
                let batch = monitor
                    .receive(Some(Duration::from_millis(1)))
                    .expect("receive");
                // Events from this machine may arrive; each passed the filter.
                assert!(batch
                    .events
                    .iter()
                    .all(|e| e.subsystem.as_deref() == Some("pci")));
            }
            Err(err) => assert!(err.errno().is_some()),
        }
    }
}
