"""``kata-vfio cdi list | validate | generate | inject``: CDI specs and injection.

``--spec-dir`` (repeatable, lowest priority first; default /etc/cdi then /var/run/cdi) goes
before the subcommand. ``inject`` edits an OCI spec file in place, atomically: on any failure
the file is left byte for byte as it was.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kata_vfio import oci, scan
from kata_vfio.cdi import (
    NAMINGS,
    DevfsLookup,
    DeviceLookup,
    Registry,
    Spec,
    dump_spec,
    generate_vfio_spec,
    generate_vfio_specs,
    load_spec,
    minimum_version,
    parse_annotations,
    strip_annotations,
    write_vfio_spec,
)
from kata_vfio.cli import _common
from kata_vfio.errors import CdiError, CdiSpecError, HostIOError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``cdi`` and its subcommands."""
    cdi = _common.add_command(
        subparsers, "cdi", _cmd_missing, "CDI: list, validate, generate and inject devices"
    )
    _common.add_spec_dir_option(cdi)
    commands = cdi.add_subparsers(dest="cdi_command", metavar="SUBCOMMAND")
    commands.required = True

    _common.add_subcommand(
        commands, "list", _cmd_list, "list CDI devices with their spec file and priority"
    )

    sub = _common.add_subcommand(
        commands, "validate", _cmd_validate, "check CDI spec files strictly"
    )
    sub.add_argument(
        "files",
        nargs="+",
        type=_common.input_file,
        metavar="FILE",
        help="spec file (.yaml or .json)",
    )

    sub = _common.add_subcommand(
        commands, "generate", _cmd_generate, "write CDI specs for the host's VFIO devices"
    )
    sub.add_argument(
        "--kind", metavar="VENDOR/CLASS", help="spec kind (default: by device, nvidia.com/pgpu)"
    )
    sub.add_argument(
        "--naming",
        choices=NAMINGS,
        default="group",
        help="device names: IOMMU group, index in PCI order, PCI address or cdev (default group)",
    )
    sub.add_argument(
        "--cdev", action="store_true", help="one device per function with its VFIO cdev node"
    )
    sub.add_argument(
        "--output-dir",
        type=_common.directory_or_missing,
        metavar="DIR",
        help="write <vendor>-<class>.yaml there instead of printing",
    )
    sub.add_argument("--no-all", action="store_true", help="leave out the 'all' device")
    sub.add_argument(
        "--bdf", action="append", metavar="BDF", help="only this PCI function (repeatable)"
    )
    sub.add_argument(
        "--pci-id",
        action="append",
        default=[],
        metavar="VVVV[:DDDD]",
        help="only functions with this vendor (and device) id, in hex (repeatable)",
    )

    sub = _common.add_subcommand(
        commands, "inject", _cmd_inject, "inject CDI devices into an OCI spec, in place"
    )
    target = sub.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--bundle",
        type=_common.bundle_dir,
        metavar="DIR",
        help="OCI bundle (its config.json is edited)",
    )
    target.add_argument(
        "--oci-spec", type=_common.input_file, metavar="FILE", help="OCI runtime spec file to edit"
    )
    sub.add_argument(
        "--device",
        action="append",
        type=_common.cdi_device_name,
        default=[],
        metavar="NAME",
        help="qualified device name vendor.com/class=name (repeatable)",
    )
    sub.add_argument(
        "--from-annotations",
        action="store_true",
        help="also inject the devices named by the spec's cdi.k8s.io/ annotations",
    )
    sub.add_argument(
        "--strip-annotations",
        action="store_true",
        help="remove every cdi.k8s.io/ annotation afterwards (no second injection later)",
    )
    sub.add_argument(
        "--keep-inner",
        action="store_true",
        help="when stripping, keep the runtime's own cdi.k8s.io/vfio<N> keys",
    )
    sub.add_argument("--dry-run", action="store_true", help="report the changes, write nothing")


def _cmd_missing(args: argparse.Namespace) -> int:
    del args
    print("kata-vfio: cdi needs a subcommand (see: kata-vfio cdi --help)", file=sys.stderr)
    return _common.EXIT_USAGE


def _registry(args: argparse.Namespace, lookup: DeviceLookup | None = None) -> Registry:
    return Registry(args.spec_dirs or None, device_lookup=lookup)


def _cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    report = registry.refresh()
    devices = registry.list_devices()
    errors = {path: list(messages) for path, messages in report.errors.items()}
    for path, reason in report.ignored.items():
        print(f"kata-vfio: note: {path} is ignored: {reason}", file=sys.stderr)
    if args.json:
        _common.print_json({"devices": [d.to_document() for d in devices], "errors": errors})
    else:
        _common.print_table(
            ["DEVICE", "SPEC", "PRIORITY"], [(d.name, d.path, d.priority) for d in devices]
        )
        if not devices:
            print(
                f"no CDI devices in {', '.join(registry.spec_dirs) or 'no directory'}",
                file=sys.stderr,
            )
        for path, messages in errors.items():
            for message in messages:
                print(f"kata-vfio: error: {path}: {message}", file=sys.stderr)
    return _common.EXIT_FINDING if errors else _common.EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    results = [_validate_one(path) for path in args.files]
    if args.json:
        _common.print_json({"files": results})
    else:
        for result in results:
            if result["valid"]:
                print(
                    f"ok       {result['path']}: {result['kind']}, {len(result['devices'])} "
                    f"device(s), cdiVersion {result['cdi_version']} "
                    f"(needs {result['minimum_version']})"
                )
            else:
                print(f"invalid  {result['path']}")
                for error in result["errors"]:
                    print(f"  - {error}")
    return _common.EXIT_OK if all(r["valid"] for r in results) else _common.EXIT_FINDING


def _validate_one(path: str) -> dict[str, Any]:
    result: dict[str, Any] = {"path": path, "valid": False, "errors": []}
    try:
        spec = load_spec(path)
    except CdiSpecError as exc:
        result["errors"] = list(exc.problems)
        return result
    except HostIOError as exc:
        result["errors"] = [str(exc)]
        return result
    result.update(
        valid=True,
        kind=spec.kind,
        cdi_version=spec.version,
        minimum_version=minimum_version(spec),
        devices=list(spec.qualified_names()),
    )
    if not path.endswith((".yaml", ".json")):
        result["warnings"] = ["a registry only reads files ending in .yaml or .json"]
    return result


def _cmd_generate(args: argparse.Namespace) -> int:
    host = scan(_common.host_paths(args))
    options: dict[str, Any] = {
        "naming": args.naming,
        "cdev": args.cdev,
        "include_all": not args.no_all,
        "devices": args.bdf,
        "pci_ids": args.pci_id,
    }
    specs: tuple[Spec, ...]
    if args.kind is not None:
        specs = (generate_vfio_spec(host, kind=args.kind, **options),)
    else:
        specs = generate_vfio_specs(host, **options)
    if not specs:
        raise CdiError(
            "no assignable VFIO devices of a known kind on this host",
            hint="bind devices to vfio-pci (kata-vfio groups), or pass --kind for other devices",
        )
    written = [write_vfio_spec(spec, args.output_dir) for spec in specs] if args.output_dir else []
    if args.json:
        _common.print_json({"specs": [s.to_document() for s in specs], "written": written})
    elif written:
        for path, spec in zip(written, specs, strict=True):
            print(f"wrote {path}: {spec.kind}, {len(spec.devices)} device(s)")
    else:
        sys.stdout.write(b"".join(dump_spec(spec) for spec in specs).decode())
    return _common.EXIT_OK


def _device_lookup(args: argparse.Namespace) -> DeviceLookup | None:
    """Host nodes come from /dev unless the global options point at another devfs."""
    if not (args.sample or args.dev_root):
        return None
    paths = _common.host_paths(args)
    return DevfsLookup(paths.devfs, paths.sysfs)


def _cmd_inject(args: argparse.Namespace) -> int:
    path = oci.bundle_config_path(args.bundle) if args.bundle else args.oci_spec
    spec = oci.load_oci_spec(path)
    names = list(args.device)
    if args.from_annotations:
        _, annotated = parse_annotations(oci.annotations(spec))
        names.extend(annotated)
    # Each device once, as containerd merges its two sources.
    names = list(dict.fromkeys(names))
    registry = _registry(args, _device_lookup(args))
    # Devices an earlier run injected are skipped: a re-run changes nothing.
    present = registry.already_injected(spec, names) if names else ()
    names = [name for name in names if name not in present]
    summary: dict[str, Any] = {"spec": path, "devices": names, "already_injected": list(present)}
    edited = spec
    if names:
        result = registry.inject(spec, names)
        edited = result.spec
        summary.update(result.to_document())
    removed: dict[str, str] = {}
    if args.strip_annotations:
        stripped = strip_annotations(oci.annotations(edited), keep_inner=args.keep_inner)
        removed = stripped.removed
        if removed:
            edited = oci.with_annotations(edited, stripped.annotations)
    summary["removed_annotations"] = removed
    changed = edited != spec
    if changed and not args.dry_run:
        oci.write_oci_spec(path, edited)
    summary["written"] = changed and not args.dry_run
    summary["dry_run"] = args.dry_run
    if args.json:
        _common.print_json(summary)
    else:
        _print_inject_summary(summary)
    return _common.EXIT_OK


def _print_inject_summary(summary: dict[str, Any]) -> None:
    added = summary.get("added", {})
    would = "would be " if summary["dry_run"] else ""
    lines = [f"already injected {name}" for name in summary["already_injected"]]
    lines += [f"{would}injected {name}" for name in summary["devices"]]
    lines += [
        f"  device {d['path']} ({d['type']} {d['major']}:{d['minor']})"
        for d in added.get("devices", [])
    ]
    lines += [f"  env {entry}" for entry in added.get("env", [])]
    lines += [f"  mount {m['source']} -> {m['destination']}" for m in added.get("mounts", [])]
    lines += [f"  hook {h['lifecycle']} {h['path']}" for h in added.get("hooks", [])]
    lines += [
        f"{would}removed annotation {key}={value}"
        for key, value in summary["removed_annotations"].items()
    ]
    if not lines:
        lines.append("nothing to do: no devices requested and no CDI annotations to remove")
    verb = "wrote" if summary["written"] else "left unchanged"
    if summary["dry_run"] and (summary["devices"] or summary["removed_annotations"]):
        verb = "dry run: would write, left unchanged"
    lines.append(f"{verb} {summary['spec']}")
    sys.stdout.write("\n".join(lines) + "\n")
