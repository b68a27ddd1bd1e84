"""``kata-vfio k8s device-plugin | dra-plugin | inventory | manifests``: the Kubernetes node
agent.

``device-plugin`` and ``dra-plugin`` run in the foreground until SIGTERM or SIGINT and log
every decision to stderr (through a queue, so a slow log reader never delays a kubelet call).
``inventory`` prints the units the agent would advertise, with the reasons for Unhealthy ones.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import queue
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kata_vfio import scan
from kata_vfio._echo import echo
from kata_vfio.cli import _common
from kata_vfio.errors import InvalidInputError
from kata_vfio.k8s.cdispec import DEFAULT_CDI_DIR
from kata_vfio.k8s.dra.ports import check_node_name
from kata_vfio.k8s.inventory import (
    IOMMU_MODES,
    Inventory,
    build_inventory,
    list_devfs_nodes,
    resolve_iommu_mode,
)
from kata_vfio.k8s.resources import DEFAULT_RESOURCE, parse_resource, parse_resources
from kata_vfio.k8s.watch import WatchConfig

__all__ = ["register"]

_DEFAULT_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
_DRA_PLUGIN_DIR = "/var/lib/kubelet/plugins"
_DRA_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"


def register(subparsers: Any) -> None:
    """Adds ``k8s`` and its subcommands."""
    k8s = _common.add_command(
        subparsers, "k8s", _cmd_missing, "Kubernetes: device plugin, inventory, manifests"
    )
    commands = k8s.add_subparsers(dest="k8s_command", metavar="SUBCOMMAND")
    commands.required = True

    sub = _common.add_subcommand(
        commands,
        "device-plugin",
        _cmd_device_plugin,
        "serve whole IOMMU groups to the kubelet (foreground; SIGTERM stops it)",
    )
    _add_inventory_options(sub)
    _add_directory_options(
        sub,
        ("--plugin-dir", _DEFAULT_PLUGIN_DIR, "the kubelet's device-plugin directory"),
        ("--cdi-dir", DEFAULT_CDI_DIR, "where the CDI specs are written"),
    )
    _add_watch_options(sub)
    sub.add_argument(
        "--device-specs",
        action="store_true",
        help="also answer Allocate with the device nodes (for runtimes without CDI)",
    )

    _add_dra_plugin(commands)

    sub = _common.add_subcommand(
        commands, "inventory", _cmd_inventory, "list the units the device plugin would offer"
    )
    _add_inventory_options(sub)

    sub = _common.add_subcommand(
        commands,
        "manifests",
        _cmd_manifests,
        "print the DaemonSet, RuntimeClass, containerd and Kata configuration snippets",
    )
    _add_inventory_options(sub)
    sub.add_argument("--image", default=None, metavar="IMG", help="the agent's container image")
    sub.add_argument(
        "--namespace", default="kube-system", metavar="NS", help="the DaemonSet's namespace"
    )
    sub.add_argument(
        "--runtime-handler",
        default=None,
        metavar="NAME",
        help="containerd's name for the Kata runtime (default kata-qemu-nvidia-gpu)",
    )
    sub.add_argument(
        "--dra",
        action="store_true",
        help="the DRA kubelet plugin (DaemonSet, RBAC, DeviceClass) instead of the device plugin",
    )
    sub.add_argument(
        "--driver-name",
        default=None,
        metavar="NAME",
        help="with --dra: the DRA driver and DeviceClass name (default vfio.kata-vfio.io)",
    )
    sub.add_argument(
        "--only",
        choices=("daemonset", "rbac", "deviceclass", "runtimeclass", "containerd", "kata"),
        help="print one piece, as is (rbac and deviceclass with --dra)",
    )


def _add_inventory_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resource",
        action="append",
        dest="resources",
        default=[],
        metavar="NAME=SELECTOR",
        help="a resource and its functions as VENDOR:DEVICE pairs, '*' for any device "
        f"(repeatable; default: {DEFAULT_RESOURCE} = every NVIDIA display/3D controller)",
    )
    parser.add_argument(
        "--iommu-mode",
        choices=IOMMU_MODES,
        default="auto",
        help="legacy: /dev/vfio/<group>; iommufd: the group's cdevs and /dev/iommu; auto: "
        "iommufd when the host has both (default)",
    )


def _add_dra_plugin(commands: Any) -> None:
    sub = _common.add_subcommand(
        commands,
        "dra-plugin",
        _cmd_dra_plugin,
        "prepare whole IOMMU groups for DRA ResourceClaims (foreground; SIGTERM stops it)",
    )
    sub.add_argument(
        "--driver-name",
        required=True,
        type=_common.checked(_driver_name),
        metavar="NAME",
        help="the DRA driver name (DNS subdomain)",
    )
    sub.add_argument(
        "--node-name",
        required=True,
        type=_common.checked(_node_name),
        metavar="NODE",
        help="this node's name (the slices' pool)",
    )
    _add_inventory_options(sub)
    _add_directory_options(
        sub,
        ("--plugin-dir", _DRA_PLUGIN_DIR, "the kubelet's plugins directory (dra.sock inside)"),
        ("--registry-dir", _DRA_REGISTRY_DIR, "the kubelet's plugin registration directory"),
        ("--cdi-dir", DEFAULT_CDI_DIR, "where the per-claim CDI specs are written"),
    )
    sub.add_argument(
        "--state-dir",
        default=None,
        type=_common.directory_or_missing,
        metavar="DIR",
        help="checkpoint and binding journal (default <plugin-dir>/<driver-name>)",
    )
    sub.add_argument(
        "--kubeconfig",
        default=None,
        type=_common.input_file,
        metavar="FILE",
        help="the API server's kubeconfig (default: the pod's service account in a cluster, "
        "else $KUBECONFIG or ~/.kube/config)",
    )
    sub.add_argument(
        "--deadline",
        type=_deadline,
        default=30.0,
        metavar="S",
        help="seconds a prepare or unprepare call may take (default 30; the kubelet waits 45)",
    )
    _add_watch_options(sub)
    sub.add_argument(
        "--cleanup",
        action="store_true",
        help="delete this node's ResourceSlices when stopped by SIGTERM/SIGINT",
    )


def _add_watch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rescan-interval",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="rescan the host every S seconds besides kernel uevents (default 30)",
    )
    parser.add_argument(
        "--no-uevents",
        action="store_true",
        help="do not listen to kernel uevents (rescan on the timer only)",
    )


def _add_directory_options(sub: argparse.ArgumentParser, *options: tuple[str, str, str]) -> None:
    """Directory options (option, default, what it is), each checked while parsing."""
    for option, default, what in options:
        sub.add_argument(
            option,
            default=default,
            type=_common.directory_or_missing,
            metavar="DIR",
            help=f"{what} (default {default})",
        )


def _driver_name(text: str) -> str:
    from kata_vfio.k8s.dra.plugin import validate_driver_name  # noqa: PLC0415

    validate_driver_name(text)
    return text


def _node_name(text: str) -> str:
    check_node_name(text)
    return text


def _deadline(text: str) -> float:
    value = _seconds(text)
    if not 1 <= value <= 40:
        raise argparse.ArgumentTypeError(
            f"{echo(text)} s is out of range (1 to 40: the kubelet waits 45)"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {echo(text)}") from None
    if not 0.05 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{echo(text)} s is out of range (0.05 to 86400)")
    return value


def _cmd_missing(args: argparse.Namespace) -> int:
    del args
    print("kata-vfio: k8s needs a subcommand (see: kata-vfio k8s --help)", file=sys.stderr)
    return _common.EXIT_USAGE


def _watch_config(args: argparse.Namespace, details: bool = False) -> WatchConfig:
    return WatchConfig(
        paths=_common.host_paths(args),
        resources=parse_resources(args.resources),
        iommu_mode=args.iommu_mode,
        rescan_interval=getattr(args, "rescan_interval", 30.0),
        details=details,
    )


def _cmd_inventory(args: argparse.Namespace) -> int:
    config = _watch_config(args, details=True)
    host = scan(config.paths, details=True)
    mode = resolve_iommu_mode(host, config.iommu_mode)
    inventory = build_inventory(host, config.resources, mode, devfs_nodes=list_devfs_nodes(host))
    if getattr(args, "json", False):
        _common.print_json(inventory_document(inventory))
    else:
        _print_inventory(inventory)
    return _common.EXIT_OK


def inventory_document(inventory: Inventory) -> dict[str, Any]:
    """The inventory as stable JSON (``kata-vfio k8s inventory --json``)."""
    return {
        "mode": inventory.mode,
        "host_problems": list(inventory.host_problems),
        "resources": [
            {
                "name": entry.resource.name,
                "selector": [str(s) for s in entry.resource.selectors],
                "env": entry.resource.env_name,
                "units": [
                    {
                        "id": u.id,
                        "cdi_name": u.cdi_name,
                        "group": u.group,
                        "healthy": u.healthy,
                        "reasons": list(u.reasons),
                        "nodes": list(u.nodes),
                        "numa_node": u.locality.numa_node,
                        "root_complex": u.locality.root_complex,
                        "root_port": None
                        if u.locality.root_port is None
                        else str(u.locality.root_port),
                        "switch": None if u.locality.switch is None else str(u.locality.switch),
                        "largest_bar": u.largest_bar,
                        "functions": [
                            {
                                "bdf": str(f.bdf),
                                "id": f"{f.vendor:04x}:{f.device:04x}",
                                "class": f"{f.class_code:06x}",
                                "driver": f.driver,
                                "selected": f.selected,
                            }
                            for f in u.functions
                        ],
                    }
                    for u in entry.units
                ],
            }
            for entry in inventory.resources
        ],
    }


def _print_inventory(inventory: Inventory) -> None:
    print(f"IOMMU mode: {inventory.mode}")
    for problem in inventory.host_problems:
        print(f"host problem: {problem}")
    for entry in inventory.resources:
        print(f"\n{entry.resource} ({len(entry.healthy)} healthy of {len(entry.units)})")
        rows = [
            (
                u.id,
                u.group,
                "Healthy" if u.healthy else "Unhealthy",
                u.locality.numa_node,
                ",".join(str(b) for b in u.bdfs) or "-",
                " ".join(u.nodes) or "-",
            )
            for u in entry.units
        ]
        if rows:
            _common.print_table(["ID", "GROUP", "HEALTH", "NUMA", "FUNCTIONS", "NODES"], rows)
        for unit in entry.units:
            for reason in unit.reasons:
                print(f"  {unit.id}: {reason}")


def _cmd_manifests(args: argparse.Namespace) -> int:
    from kata_vfio.k8s import manifests  # noqa: PLC0415 (the serving modules need grpc)

    resources = [parse_resource(text) for text in args.resources]
    parse_resources(args.resources)  # refuses a name given twice
    handler = (
        manifests.DEFAULT_RUNTIME_HANDLER if args.runtime_handler is None else args.runtime_handler
    )
    pieces: dict[str, Any] = {
        "daemonset": manifests.daemonset(
            resources,
            image=manifests.DEFAULT_IMAGE if args.image is None else args.image,
            namespace=args.namespace,
            iommu_mode=args.iommu_mode,
        ),
        "runtimeclass": manifests.runtime_class(handler=handler),
        "containerd": manifests.containerd_snippet(handler),
        "kata": manifests.kata_snippet(),
    }
    yaml_pieces = ["daemonset", "runtimeclass"]
    if args.dra or args.driver_name is not None or args.only in ("rbac", "deviceclass"):
        if not args.dra:
            raise InvalidInputError(
                "--driver-name, --only rbac and --only deviceclass are DRA pieces",
                hint="add --dra",
            )
        _dra_pieces(args, resources, pieces)
        yaml_pieces = ["daemonset", "rbac", "deviceclass", "runtimeclass"]
    if getattr(args, "json", False):
        _common.print_json(pieces if args.only is None else {args.only: pieces[args.only]})
        return _common.EXIT_OK
    if args.only is not None:
        piece = pieces[args.only]
        sys.stdout.write(piece if isinstance(piece, str) else _yaml(_documents([piece])))
        return _common.EXIT_OK
    sys.stdout.write(_yaml(_documents([pieces[key] for key in yaml_pieces])))
    for title, key in (
        ("containerd (/etc/containerd/config.toml)", "containerd"),
        ("Kata (configuration-qemu-nvidia-gpu.toml)", "kata"),
    ):
        sys.stdout.write(f"\n# --- {title} ---\n")
        sys.stdout.write("".join(f"# {line}".rstrip() + "\n" for line in pieces[key].splitlines()))
    return _common.EXIT_OK


def _dra_pieces(args: argparse.Namespace, resources: list[Any], pieces: dict[str, Any]) -> None:
    from kata_vfio.k8s import manifests  # noqa: PLC0415 (as in _cmd_manifests)
    from kata_vfio.k8s.dra.slices import check_driver_name  # noqa: PLC0415

    driver = args.driver_name or manifests.DEFAULT_DRIVER_NAME
    check_driver_name(driver)
    pieces["daemonset"] = manifests.dra_daemonset(
        resources,
        driver=driver,
        image=args.image or manifests.DEFAULT_IMAGE,
        namespace=args.namespace,
        iommu_mode=args.iommu_mode,
    )
    pieces["rbac"] = manifests.dra_rbac(args.namespace)
    pieces["deviceclass"] = manifests.device_class(driver)


def _documents(pieces: list[Any]) -> list[Any]:
    """One YAML document per object (a piece may be a list of objects, as RBAC is)."""
    return [doc for piece in pieces for doc in (piece if isinstance(piece, list) else [piece])]


def _yaml(documents: list[Any]) -> str:
    import yaml  # noqa: PLC0415

    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


def _cmd_device_plugin(args: argparse.Namespace) -> int:
    # Imported here: grpc is only needed by the serving commands.
    from kata_vfio.k8s.agent import AgentConfig, run_device_plugin  # noqa: PLC0415

    config = AgentConfig(
        watch=_watch_config(args),
        plugin_dir=args.plugin_dir,
        cdi_dir=args.cdi_dir,
        device_specs=args.device_specs,
        uevents=not args.no_uevents,
    )
    if not config.watch.resources:
        raise InvalidInputError("no resources to serve", hint="pass --resource NAME=SELECTOR")
    stop = threading.Event()
    with _queued_logging(), _stop_on_signals(stop):
        logging.getLogger("kata_vfio").info(
            "kata-vfio device plugin: %s; plugin dir %s, CDI dir %s, rescan every %g s",
            ", ".join(str(r) for r in config.watch.resources),
            config.plugin_dir,
            config.cdi_dir,
            config.watch.rescan_interval,
        )
        run_device_plugin(config, stop)
    return _common.EXIT_OK


def _cmd_dra_plugin(args: argparse.Namespace) -> int:
    # Imported here: grpc and the kubernetes client are only needed by this command.
    from kata_vfio.k8s.dra.plugin import DraConfig, run_dra_plugin  # noqa: PLC0415
    from kata_vfio.k8s.dra.prepare import HostAccess  # noqa: PLC0415

    watch = _watch_config(args)
    config = DraConfig(
        driver=args.driver_name,
        node=args.node_name,
        access=HostAccess(paths=watch.paths, resources=watch.resources, iommu_mode=args.iommu_mode),
        plugin_dir=args.plugin_dir,
        registry_dir=args.registry_dir,
        cdi_dir=args.cdi_dir,
        state_dir=args.state_dir,
        deadline=args.deadline,
        rescan_interval=args.rescan_interval,
        uevents=not args.no_uevents,
        cleanup=args.cleanup,
    )
    claims, slices = _api_ports(args.kubeconfig, config.driver, config.node)
    stop = threading.Event()
    with _queued_logging(), _stop_on_signals(stop):
        logging.getLogger("kata_vfio").info(
            "kata-vfio DRA plugin %s on node %s: %s; endpoint %s, CDI dir %s, state dir %s",
            config.driver,
            config.node,
            ", ".join(str(r) for r in config.access.resources),
            config.endpoint,
            config.cdi_dir,
            config.state,
        )
        run_dra_plugin(config, stop, claims, slices)
    return _common.EXIT_OK


def _api_ports(kubeconfig: str | None, driver: str, node: str) -> tuple[Any, Any]:
    """The API-server side of the DRA plugin: claims read and slices published with the
    official client."""
    from kata_vfio.k8s.dra.apiclient import load_api_client  # noqa: PLC0415 (as above)
    from kata_vfio.k8s.dra.claims import ClaimReader  # noqa: PLC0415
    from kata_vfio.k8s.dra.slices import SlicePublisher  # noqa: PLC0415

    client = load_api_client(kubeconfig)
    return ClaimReader(client), SlicePublisher(client, driver, node)


class _RecordQueue(logging.handlers.QueueHandler):
    """Queues the record as it is: the listener's thread formats it, not the caller (a
    kubelet call), and nothing is pickled (the queue stays in this process)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


@contextmanager
def _queued_logging() -> Iterator[None]:
    """INFO and up to stderr, formatted and written by a separate thread."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    listener = logging.handlers.QueueListener(records, handler)
    logger = logging.getLogger("kata_vfio")
    queued = _RecordQueue(records)
    logger.addHandler(queued)
    previous = logger.level, logging.logProcesses, logging.logMultiprocessing
    logger.setLevel(logging.INFO)
    # The logging HOWTO's "Optimization": skip what the format does not print.
    logging.logProcesses = logging.logMultiprocessing = False
    listener.start()
    try:
        yield
    finally:
        logger.removeHandler(queued)
        logger.setLevel(previous[0])
        logging.logProcesses, logging.logMultiprocessing = previous[1:]
        listener.stop()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (the serve loop then ends cleanly)."""

    def handle(signum: int, frame: object) -> None:
        del frame
        logging.getLogger("kata_vfio").info("got %s", signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
