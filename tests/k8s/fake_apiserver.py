"""A fake Kubernetes API server for the DRA driver's tests: the real REST paths and JSON, served
over HTTP on 127.0.0.1 by a thread, so the official ``kubernetes`` client runs unchanged
against it (URL building, query parameters, bearer token, JSON decoding, error bodies).

What it serves, as the API server does:

* ``GET /api/v1/nodes/{name}``;
* ``GET /apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}``;
* ``/apis/resource.k8s.io/v1/resourceslices``: LIST (``fieldSelector`` on ``metadata.name``,
  ``spec.driver``, ``spec.nodeName``, ``spec.pool.name``; ``labelSelector`` with ``=``, ``==``,
  ``!=``, ``key`` and ``!key``), POST (``generateName``, ``AlreadyExists``), and per name GET,
  PUT (``resourceVersion`` must match: ``Conflict``; immutable fields), DELETE.

Every object gets ``uid``, ``resourceVersion`` (one counter for the whole store),
``creationTimestamp`` and ``generation`` (bumped when the spec changes). Errors are ``Status``
objects with the real ``reason`` and ``code`` (NotFound, AlreadyExists, Conflict, Invalid,
BadRequest, Unauthorized). ResourceSlices are validated with the API's own limits (at most 128
devices, DNS-label device names, at most 32 attributes and capacities per device, one typed
value per attribute, strings of at most 64 characters, qualified attribute names) and decoded
strictly, as with ``fieldValidation=Strict``: an unknown field is refused, never dropped.

``fail(method, path_regex, code)`` makes matching requests fail, for the error paths.
"""

from __future__ import annotations

import copy
import datetime
import json
import random
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

RESOURCE = "/apis/resource.k8s.io/v1"
SLICES = f"{RESOURCE}/resourceslices"
MAX_DEVICES = 128
MAX_ATTRIBUTES_AND_CAPACITIES = 32
MAX_VALUE_LENGTH = 64

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")
_GENERATED_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SLICE_FIELDS = {
    "metadata.name": ("metadata", "name"),
    "spec.driver": ("spec", "driver"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.pool.name": ("spec", "pool", "name"),
}
_SLICE_SPEC_KEYS = {
    "driver",
    "pool",
    "nodeName",
    "nodeSelector",
    "allNodes",
    "perDeviceNodeSelection",
    "devices",
    "sharedCounters",
}
_DEVICE_KEYS = {
    "name",
    "attributes",
    "capacity",
    "consumesCounters",
    "nodeName",
    "nodeSelector",
    "allNodes",
    "taints",
    "bindsToNode",
    "bindingConditions",
    "bindingFailureConditions",
    "allowMultipleAllocations",
}
_ATTRIBUTE_TYPES = {"int", "bool", "string", "version"}


class ApiError(Exception):
    """An answer of the fake API server that is a Status."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            document["details"] = self.details
        return document


def _not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', name=name, kind=kind)


def _invalid(name: str, cause: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'ResourceSlice.resource.k8s.io "{name}" is invalid: {cause}',
        name=name,
        group="resource.k8s.io",
        kind="ResourceSlice",
    )


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    code: int
    times: int


@dataclass(frozen=True)
class Request:
    """One request the server answered."""

    method: str
    path: str
    query: dict[str, list[str]]


class FakeApiServer:
    """The fake API server; a context manager that serves on a free port of 127.0.0.1."""

    def __init__(self, token: str = "fake-token") -> None:
        self.token = token
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._version = 100
        self._nodes: dict[str, dict[str, Any]] = {}
        self._claims: dict[tuple[str, str], dict[str, Any]] = {}
        self._slices: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # ---- fixtures -----------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, *, token: str | None = None) -> Path:
        """A kubeconfig for this server with a bearer token (this server's by default)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "driver", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "driver"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def add_node(self, name: str) -> dict[str, Any]:
        """A Node object named ``name`` (its uid is what slices' owner references name)."""
        with self._lock:
            node = self._stamp({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
            node.update(spec={}, status={})
            self._nodes[name] = node
            return copy.deepcopy(node)

    def add_claim(
        self,
        namespace: str,
        name: str,
        results: list[dict[str, str]] | None,
        *,
        device_class: str = "vfio.kata-vfio.io",
    ) -> dict[str, Any]:
        """A ResourceClaim with one request per distinct ``request`` of ``results``; allocated
        with those results, or not allocated when ``results`` is None."""
        requests = sorted({r["request"].split("/")[0] for r in results or []}) or ["dev"]
        claim: dict[str, Any] = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": request,
                            "exactly": {
                                "deviceClassName": device_class,
                                "allocationMode": "ExactCount",
                                "count": 1,
                            },
                        }
                        for request in requests
                    ]
                }
            },
            "status": {},
        }
        if results is not None:
            claim["status"] = {"allocation": {"devices": {"results": copy.deepcopy(results)}}}
        with self._lock:
            stamped = self._stamp(claim)
            self._claims[(namespace, name)] = stamped
            return copy.deepcopy(stamped)

    def delete_claim(self, namespace: str, name: str) -> None:
        with self._lock:
            del self._claims[(namespace, name)]

    def slices(self) -> list[dict[str, Any]]:
        """Every stored ResourceSlice, by name."""
        with self._lock:
            return [copy.deepcopy(self._slices[name]) for name in sorted(self._slices)]

    def put_slice(self, document: dict[str, Any]) -> dict[str, Any]:
        """Stores a ResourceSlice directly (another writer), validated like a POST."""
        with self._lock:
            return self._create_slice(copy.deepcopy(document))

    def fail(self, method: str, path: str, code: int, *, times: int = 1) -> None:
        """The next ``times`` requests ``method`` on a path matching regex ``path`` get a
        Status with ``code``."""
        with self._lock:
            self._faults.append(_Fault(method, re.compile(path), code, times))

    def writes(self) -> list[Request]:
        """The POST, PUT, PATCH and DELETE requests answered so far."""
        return [r for r in self.requests if r.method in {"POST", "PUT", "PATCH", "DELETE"}]

    # ---- request handling (called by the handler thread) --------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        with self._lock:
            self.requests.append(Request(method, parts.path, query))
            try:
                self._authorize(headers)
                self._inject_fault(method, parts.path)
                return self._route(method, parts.path, query, body)
            except ApiError as exc:
                return exc.code, exc.status()

    def _authorize(self, headers: dict[str, str]) -> None:
        if headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    def _inject_fault(self, method: str, path: str) -> None:
        for fault in self._faults:
            if fault.times > 0 and fault.method == method and fault.path.search(path):
                fault.times -= 1
                reason = {
                    403: "Forbidden",
                    409: "Conflict",
                    500: "InternalError",
                    503: "ServiceUnavailable",
                }
                raise ApiError(
                    fault.code, reason.get(fault.code, "Unknown"), f"injected {fault.code}"
                )

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        routes: list[tuple[str, str, Callable[..., tuple[int, dict[str, Any]]]]] = [
            ("GET", r"/api/v1/nodes/(?P<name>[^/]+)", self._get_node),
            (
                "GET",
                rf"{RESOURCE}/namespaces/(?P<namespace>[^/]+)/resourceclaims/(?P<name>[^/]+)",
                self._get_claim,
            ),
            ("GET", SLICES, self._list_slices),
            ("POST", SLICES, self._post_slice),
            ("GET", rf"{SLICES}/(?P<name>[^/]+)", self._get_slice),
            ("PUT", rf"{SLICES}/(?P<name>[^/]+)", self._put_slice),
            ("DELETE", rf"{SLICES}/(?P<name>[^/]+)", self._delete_slice),
        ]
        known_path = False
        for route_method, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            known_path = True
            if route_method == method:
                return action(query=query, body=body, **match.groupdict())
        if known_path:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow {method} here")
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _get_node(self, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        node = self._nodes.get(name)
        if node is None:
            raise _not_found("nodes", name)
        return 200, copy.deepcopy(node)

    def _get_claim(self, namespace: str, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        claim = self._claims.get((namespace, name))
        if claim is None:
            raise _not_found("resourceclaims.resource.k8s.io", name)
        return 200, copy.deepcopy(claim)

    def _list_slices(self, query: dict[str, list[str]], **_: Any) -> tuple[int, dict[str, Any]]:
        fields = _field_terms(query.get("fieldSelector", [""])[0])
        labels = _label_terms(query.get("labelSelector", [""])[0])
        items = [
            copy.deepcopy(s)
            for name, s in sorted(self._slices.items())
            if all(test(s) for test in fields + labels)
        ]
        for item in items:
            # List items carry no kind or apiVersion; the list does.
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return 200, {
            "kind": "ResourceSliceList",
            "apiVersion": "resource.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._version)},
            "items": items,
        }

    def _get_slice(self, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        found = self._slices.get(name)
        if found is None:
            raise _not_found("resourceslices.resource.k8s.io", name)
        return 200, copy.deepcopy(found)

    def _post_slice(self, body: bytes, **_: Any) -> tuple[int, dict[str, Any]]:
        return 201, copy.deepcopy(self._create_slice(_decode(body)))

    def _create_slice(self, document: dict[str, Any]) -> dict[str, Any]:
        metadata = document.setdefault("metadata", {})
        if not metadata.get("name"):
            prefix = metadata.get("generateName")
            if not prefix:
                raise _invalid("", "metadata.name: Required value: name or generateName")
            suffix = "".join(random.choices(_GENERATED_CHARS, k=5))
            metadata["name"] = prefix + suffix
        name = metadata["name"]
        if name in self._slices:
            raise ApiError(
                409,
                "AlreadyExists",
                f'resourceslices.resource.k8s.io "{name}" already exists',
                name=name,
                group="resource.k8s.io",
                kind="resourceslices",
            )
        for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            metadata.pop(key, None)
        _validate_slice(document)
        stored = self._stamp(document)
        self._slices[name] = stored
        return stored

    def _put_slice(self, name: str, body: bytes, **_: Any) -> tuple[int, dict[str, Any]]:
        document = _decode(body)
        old = self._slices.get(name)
        if old is None:
            raise _not_found("resourceslices.resource.k8s.io", name)
        metadata = document.setdefault("metadata", {})
        if metadata.get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        version = metadata.get("resourceVersion")
        if version and version != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on resourceslices.resource.k8s.io "{name}": '
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
                name=name,
                group="resource.k8s.io",
                kind="resourceslices",
            )
        _validate_slice(document)
        for path in (("driver",), ("nodeName",), ("pool", "name")):
            if _dig(document["spec"], path) != _dig(old["spec"], path):
                raise _invalid(name, f"spec.{'.'.join(path)}: Invalid value: field is immutable")
        self._version += 1
        kept = {k: old["metadata"][k] for k in ("uid", "creationTimestamp", "generation")}
        metadata.update(kept, resourceVersion=str(self._version))
        if document["spec"] != old["spec"]:
            metadata["generation"] = old["metadata"]["generation"] + 1
        self._slices[name] = document
        return 200, copy.deepcopy(document)

    def _delete_slice(self, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        found = self._slices.pop(name, None)
        if found is None:
            raise _not_found("resourceslices.resource.k8s.io", name)
        return 200, copy.deepcopy(found)

    def _stamp(self, document: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        document["metadata"].update(
            uid=str(uuid.uuid4()),
            resourceVersion=str(self._version),
            creationTimestamp=now,
            generation=1,
        )
        return document


def _decode(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "BadRequest", "the body is not an object")
    if document.get("apiVersion") != "resource.k8s.io/v1" or document.get("kind") not in (
        "ResourceSlice",
        None,
    ):
        raise ApiError(400, "BadRequest", "the body is not a resource.k8s.io/v1 ResourceSlice")
    return document


def _dig(document: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = document
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _field_terms(selector: str) -> list[Callable[[dict[str, Any]], bool]]:
    tests = []
    for term in filter(None, selector.split(",")):
        match = re.fullmatch(r"([^=!]+)(==|=|!=)(.*)", term)
        if match is None:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        key, op, value = match.groups()
        path = _SLICE_FIELDS.get(key)
        if path is None:
            raise ApiError(
                400,
                "BadRequest",
                f'field label not supported: {key}: "{key}" is not a known field selector',
            )
        tests.append(_compare(path, value, negate=op == "!="))
    return tests


def _compare(
    path: tuple[str, ...], value: str, *, negate: bool
) -> Callable[[dict[str, Any]], bool]:
    return lambda document: ((_dig(document, path) or "") == value) != negate


def _label_terms(selector: str) -> list[Callable[[dict[str, Any]], bool]]:
    tests = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        match = re.fullmatch(r"(!?)([A-Za-z0-9._/-]+)(?:(==|=|!=)([A-Za-z0-9._-]*))?", term)
        if match is None:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        bang, key, op, value = match.groups()
        tests.append(_label_test(key, op, value, absent=bool(bang)))
    return tests


def _label_test(
    key: str, op: str | None, value: str | None, *, absent: bool
) -> Callable[[dict[str, Any]], bool]:
    def test(document: dict[str, Any]) -> bool:
        labels = document["metadata"].get("labels") or {}
        if op is None:
            return (key in labels) != absent
        return (labels.get(key) == value) != (op == "!=")

    return test


def _validate_slice(document: dict[str, Any]) -> None:
    name = document["metadata"]["name"]
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise _invalid(name, f"metadata.name: Invalid value: {name!r}: not a DNS subdomain")
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise _invalid(name, "spec: Required value")
    _strict(name, "spec", spec, _SLICE_SPEC_KEYS)
    driver = spec.get("driver", "")
    if len(driver) > 63 or not _DNS_SUBDOMAIN.fullmatch(driver):
        raise _invalid(name, f"spec.driver: Invalid value: {driver!r}: not a DNS subdomain")
    pool = spec.get("pool") or {}
    _strict(name, "spec.pool", pool, {"name", "generation", "resourceSliceCount"})
    if not pool.get("name"):
        raise _invalid(name, "spec.pool.name: Required value")
    if not isinstance(pool.get("generation"), int) or pool["generation"] < 0:
        raise _invalid(name, "spec.pool.generation: Invalid value: must be >= 0")
    if not isinstance(pool.get("resourceSliceCount"), int) or pool["resourceSliceCount"] < 1:
        raise _invalid(name, "spec.pool.resourceSliceCount: Invalid value: must be > 0")
    selections = [
        k for k in ("nodeName", "nodeSelector", "allNodes", "perDeviceNodeSelection") if spec.get(k)
    ]
    if len(selections) != 1:
        raise _invalid(
            name,
            "spec: Invalid value: exactly one of nodeName, nodeSelector, allNodes, "
            f"perDeviceNodeSelection is required, got {selections}",
        )
    devices = spec.get("devices") or []
    if len(devices) > MAX_DEVICES:
        raise _invalid(
            name, f"spec.devices: Too many: {len(devices)}: must have at most {MAX_DEVICES} items"
        )
    seen: set[str] = set()
    for index, device in enumerate(devices):
        _validate_device(name, f"spec.devices[{index}]", device, seen)


def _strict(name: str, where: str, document: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(document) - known)
    if unknown:
        raise ApiError(
            400,
            "BadRequest",
            f'ResourceSlice "{name}": strict decoding error: unknown field "{where}.{unknown[0]}"',
        )


def _validate_device(name: str, where: str, device: dict[str, Any], seen: set[str]) -> None:
    _strict(name, where, device, _DEVICE_KEYS)
    device_name = device.get("name", "")
    if len(device_name) > 63 or not _DNS_LABEL.fullmatch(device_name):
        raise _invalid(name, f"{where}.name: Invalid value: {device_name!r}: not a DNS label")
    if device_name in seen:
        raise _invalid(name, f"{where}.name: Duplicate value: {device_name!r}")
    seen.add(device_name)
    attributes = device.get("attributes") or {}
    capacity = device.get("capacity") or {}
    if len(attributes) + len(capacity) > MAX_ATTRIBUTES_AND_CAPACITIES:
        raise _invalid(name, f"{where}: Too many: attributes and capacities over 32")
    for key, value in attributes.items():
        _validate_qualified(name, f"{where}.attributes[{key}]", key)
        if not isinstance(value, dict):
            raise _invalid(name, f"{where}.attributes[{key}]: Invalid value: not an object")
        _strict(name, f"{where}.attributes[{key}]", value, _ATTRIBUTE_TYPES)
        if len(value) != 1:
            raise _invalid(
                name,
                f"{where}.attributes[{key}]: Invalid value: exactly one value must be set, "
                f"got {sorted(value)}",
            )
        ((kind, item),) = value.items()
        expected = {"int": int, "bool": bool, "string": str, "version": str}[kind]
        if not isinstance(item, expected) or (kind == "int" and isinstance(item, bool)):
            raise _invalid(name, f"{where}.attributes[{key}].{kind}: Invalid value: {item!r}")
        if isinstance(item, str) and len(item) > MAX_VALUE_LENGTH:
            raise _invalid(
                name, f"{where}.attributes[{key}].{kind}: Too long: may not be more than 64 bytes"
            )
    for key, value in capacity.items():
        _validate_qualified(name, f"{where}.capacity[{key}]", key)
        _strict(name, f"{where}.capacity[{key}]", value, {"value", "requestPolicy"})
        if not _QUANTITY.fullmatch(str(value.get("value", ""))):
            raise _invalid(name, f"{where}.capacity[{key}].value: Invalid value: not a quantity")


def _validate_qualified(name: str, where: str, key: str) -> None:
    domain, _, identifier = key.rpartition("/")
    if domain and (len(domain) > 63 or not _DNS_SUBDOMAIN.fullmatch(domain)):
        raise _invalid(name, f"{where}: Invalid value: {domain!r}: not a DNS subdomain")
    if len(identifier) > 32 or not _C_IDENTIFIER.fullmatch(identifier):
        raise _invalid(name, f"{where}: Invalid value: {identifier!r}: not a C identifier")


def _handler_class(server: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in two writes: without this, Nagle's algorithm and the
            # client's delayed ACK hold every answer back by 40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            code, document = server.handle(self.command, self.path, headers, body)
            data = json.dumps(document).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # quiet: the tests read server.requests

    return Handler


def iter_devices(slices: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every device of ``slices``."""
    for item in slices:
        yield from item["spec"].get("devices") or []
