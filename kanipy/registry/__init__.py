"""The registry client: distribution API v2 pulls and pushes, auth, credentials, retries.

``RegistryClient(RegistryOptions(...))`` is the entry point; see ``client.py``.
"""

from __future__ import annotations

from kanipy.registry.client import Manifest, RegistryClient
from kanipy.registry.credentials import Credential, CredentialStore
from kanipy.registry.options import RegistryOptions
from kanipy.registry.progress import ProgressCallback, ProgressEvent
from kanipy.registry.pull import PulledImage

__all__ = [
    "Credential",
    "CredentialStore",
    "Manifest",
    "ProgressCallback",
    "ProgressEvent",
    "PulledImage",
    "RegistryClient",
    "RegistryOptions",
]
