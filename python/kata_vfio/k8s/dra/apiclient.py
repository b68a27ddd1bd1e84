"""The API server client of the DRA driver: the official ``kubernetes`` client, configured from
the pod's service account or from a kubeconfig file, and the one place its failures become
:class:`~kata_vfio.errors.KubernetesError` s.

In a pod (``KUBERNETES_SERVICE_HOST`` set, no ``--kubeconfig``) the client uses the service
account's token and CA, and re-reads the token as it rotates. Otherwise it reads the kubeconfig
given, or ``$KUBECONFIG``'s first file, or ``~/.kube/config``; the file is checked first (a
plain file, YAML, with a cluster and a context) so that a wrong one is named in the error,
never a traceback from inside the client.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from kata_vfio._atomic import read_regular_file
from kata_vfio.errors import HostIOError, InvalidInputError, KubernetesError

__all__ = [
    "REQUEST_TIMEOUT",
    "api_failure",
    "api_status",
    "default_kubeconfig",
    "from_json",
    "load_api_client",
    "to_json",
]

REQUEST_TIMEOUT = 10.0
"""Seconds one API call may take (connect and read): a kubelet call that reads a claim must
finish well inside the kubelet's 45 s."""

_KUBECONFIG_LIMIT = 4 << 20


def default_kubeconfig() -> str:
    """The kubeconfig ``kubectl`` would read: ``$KUBECONFIG``'s first entry, else
    ``~/.kube/config``."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return first or os.path.join(os.path.expanduser("~"), ".kube", "config")


def load_api_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """An API client for the cluster: in-cluster configuration when ``kubeconfig`` is None and
    ``KUBERNETES_SERVICE_HOST`` is set, else the kubeconfig file (``kubeconfig``, or
    :func:`default_kubeconfig`).

    Raises :class:`InvalidInputError` naming a kubeconfig that is missing or malformed, and
    :class:`KubernetesError` when the in-cluster service account cannot be read.
    """
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            # The client's config loaders carry no annotations.
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except ConfigException as exc:
            raise KubernetesError(
                f"cannot use the pod's service account: {exc}",
                hint="mount the service account token (automountServiceAccountToken) or "
                "pass --kubeconfig",
            ) from None
        return kubernetes.client.ApiClient(configuration)
    path = kubeconfig if kubeconfig is not None else default_kubeconfig()
    _check_kubeconfig(path)
    try:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise InvalidInputError(
            f"kubeconfig {path} cannot be used: {exc}", hint=_KUBECONFIG_HINT
        ) from None
    return kubernetes.client.ApiClient(configuration)


_KUBECONFIG_HINT = (
    "pass --kubeconfig with a working kubeconfig (kubectl --kubeconfig FILE get nodes), "
    "or run in a pod with a service account"
)


def _check_kubeconfig(path: str) -> None:
    if not path or "\0" in path:
        raise InvalidInputError(f"invalid kubeconfig path {path!r}", hint=_KUBECONFIG_HINT)
    try:
        data = read_regular_file(path, limit=_KUBECONFIG_LIMIT, what="kubeconfig")
    except HostIOError as exc:
        raise InvalidInputError(str(exc), hint=_KUBECONFIG_HINT) from None
    try:
        document = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise InvalidInputError(
            f"kubeconfig {path} is not valid YAML: {exc}", hint=_KUBECONFIG_HINT
        ) from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"kubeconfig {path} is not a mapping", hint=_KUBECONFIG_HINT)
    for key in ("clusters", "contexts"):
        if not isinstance(document.get(key), list) or not document[key]:
            raise InvalidInputError(f"kubeconfig {path} has no {key}", hint=_KUBECONFIG_HINT)


def api_status(exc: ApiException) -> tuple[int, str, str]:
    """The HTTP status, the ``reason`` and the ``message`` of the API server's Status object
    in a failed call's body (the HTTP reason phrase when the body is not a Status)."""
    reason = str(exc.reason or "")
    message = ""
    body: Any = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("kind") == "Status":
            reason = str(status.get("reason") or reason)
            message = str(status.get("message") or "")
    return int(exc.status or 0), reason, message


def api_failure(
    what: str, exc: BaseException, error: type[KubernetesError] = KubernetesError
) -> KubernetesError:
    """A :class:`KubernetesError` (or the subclass ``error``) for a failed call: ``what`` names
    the call and the object ("read ResourceClaim gpu/claim-1"), then the API server's status
    and message, or the transport error."""
    if isinstance(exc, ApiException):
        code, reason, message = api_status(exc)
        detail = f"HTTP {code} {reason}" + (f": {message}" if message else "")
        hint = {
            401: "the credentials were refused: check the service account token or kubeconfig",
            403: "grant the RBAC of `kata-vfio k8s manifests --dra` to the driver's account",
        }.get(code, "see the API server's answer above")
        return error(f"{what} failed: {detail}", hint=hint)
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return error(
            f"{what} failed: the API server did not answer ({type(exc).__name__}: {exc})",
            hint="check that the API server is reachable from this node",
        )
    return error(f"{what} failed: {exc}", hint="see the API server's log")


def to_json(api_client: kubernetes.client.ApiClient, obj: object) -> Any:
    """A model the client returned as its JSON document (the API's field names): the same
    shape in every client release, whatever its model classes look like."""
    return api_client.sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def from_json(api_client: kubernetes.client.ApiClient, document: Any, model: str) -> Any:
    """The client's model ``model`` (``"V1ResourceSlice"``) of a JSON document, decoded as
    the client decodes an answer (the reverse of :func:`to_json`)."""
    text = json.dumps(document)
    deserialize: Any = api_client.deserialize
    if _DESERIALIZE_TAKES_TEXT:
        return deserialize(text, model, "application/json")
    return deserialize(_Answer(text), model)


# Since release 35 ``deserialize`` takes the answer's text and content type; before, an object
# with the text in ``data``.
_DESERIALIZE_TAKES_TEXT = (
    "content_type" in inspect.signature(kubernetes.client.ApiClient.deserialize).parameters
)


class _Answer:
    def __init__(self, data: str) -> None:
        self.data = data
