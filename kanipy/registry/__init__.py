"""The registry client: distribution API v2 pulls and pushes, auth, credentials, retries.

Three layers: ``transport`` and ``auth`` (HTTP, TLS, retries, tokens,
credentials) under ``client`` (``RegistryClient``: one method per API call)
under ``pull`` and ``push``, which speak in images:
``pull.pull(reference, client=...)`` gives a ``RemoteImage`` and
``push.push(image, reference, client=...)`` takes any ``kanipy.oci.image.Image``.

The names below load on first use: importing a light module of this package
(``kanipy.registry.progress``, ``options``) must not import ``requests``, which
``kanipy --version`` and ``--help`` do not need (issue 14).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from kanipy.registry.client import RegistryClient
    from kanipy.registry.credentials import Credential, CredentialStore
    from kanipy.registry.options import RegistryOptions
    from kanipy.registry.progress import ProgressCallback, ProgressEvent
    from kanipy.registry.remote import RemoteImage

__all__ = [
    "Credential",
    "CredentialStore",
    "ProgressCallback",
    "ProgressEvent",
    "RegistryClient",
    "RegistryOptions",
    "RemoteImage",
]

_LAZY = {
    "Credential": "kanipy.registry.credentials",
    "CredentialStore": "kanipy.registry.credentials",
    "ProgressCallback": "kanipy.registry.progress",
    "ProgressEvent": "kanipy.registry.progress",
    "RegistryClient": "kanipy.registry.client",
    "RegistryOptions": "kanipy.registry.options",
    "RemoteImage": "kanipy.registry.remote",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kanipy.registry' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
