"""The registry client: distribution API v2 pulls and pushes, auth, credentials, retries.

Three layers: ``transport`` and ``auth`` (HTTP, TLS, retries, tokens,
credentials) under ``client`` (``RegistryClient``: one method per API call)
under ``pull`` and ``push``, which speak in images:
``pull.pull(reference, client=...)`` gives a ``RemoteImage`` and
``push.push(image, reference, client=...)`` takes any ``kanipy.oci.image.Image``.
"""

from __future__ import annotations

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
