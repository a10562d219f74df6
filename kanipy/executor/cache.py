"""The layer cache: a step whose key has an entry is not run; its layer is reused.

``LayerCache`` is one per build: where entries live (``cache_store``), the
settings (Kaniko's ``--cache*`` flags) and a background thread that pushes new
entries while the build goes on. ``StageCache`` is one per stage: the chain of
keys (``cache_key``), the lookup before each step, the unpacking of a hit and
the entry made after a miss.

The cache can make a build faster, never wrong or broken: every problem with
it (unreachable, denied, a corrupt or missing blob, an entry that fails
verification) is a warning, and the step runs as if there were no cache.
On a miss, one line says which input changed since the entry the same step
made last time (found by the step's identity tag).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kanipy.dockerfile import Instruction
from kanipy.errors import KanipyError, RegistryError, UsageError
from kanipy.executor.cache_key import (
    KeyInputs,
    Uncacheable,
    after_uncacheable,
    base_key,
    key_inputs,
    step_key,
    workdir_path,
)
from kanipy.executor.cache_root import CachedLayerLost, PendingLayer, PendingRoot
from kanipy.executor.cache_store import (
    CACHE_FIELD,
    CacheEntry,
    CacheRepository,
    CacheUnavailable,
)
from kanipy.executor.step import StageContext, StageState, StepKind
from kanipy.fieldwise import Fieldwise
from kanipy.fs.rootfs import Rootfs
from kanipy.oci.blobstore import BlobStore
from kanipy.oci.config import HistoryEntry, ImageConfig
from kanipy.oci.descriptor import Descriptor, Platform
from kanipy.oci.digest import Digest
from kanipy.oci.image import store_image

log = logging.getLogger(__name__)

# Kaniko's --cache-ttl default: two weeks.
DEFAULT_TTL_SECONDS = 336 * 3600
# How long the end of a build waits for cache entries still being pushed.
PUSH_WAIT_SECONDS = 300.0
# ... and when the build failed or was interrupted.
ABANDON_WAIT_SECONDS = 10.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``336h``, ``1h30m``, ``90s``), as ``--cache-ttl`` takes it, in seconds."""
    value = text.strip()
    if value in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if match is None:
            raise UsageError(f"--cache-ttl {text!r}: expected a duration such as 336h, "
                             "6h30m or 90s")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total


@dataclass(frozen=True, repr=False, eq=False)
class CacheSettings(Fieldwise):
    """Kaniko's cache flags, with Kaniko's defaults."""

    ttl_seconds: float = DEFAULT_TTL_SECONDS
    run_layers: bool = True  # --cache-run-layers
    copy_layers: bool = False  # --cache-copy-layers
    push: bool = True  # not --no-push-cache


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age_seconds(created: str | None) -> float | None:
    if not created:
        return None
    try:
        when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return time.time() - when.timestamp()


def _tag(prefix: str, digest: str) -> str:
    return prefix + digest.partition(":")[2]


class LayerCache:
    """The cache of one build: lookups, and new entries pushed in the background."""

    def __init__(self, repository: CacheRepository, store: BlobStore, settings: CacheSettings,
                 *, layer_settings: Mapping[str, Any]) -> None:
        self.repository = repository
        self.store = store
        self.settings = settings
        self.layer_settings = dict(layer_settings)
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._pusher: threading.Thread | None = None
        self._pusher_lock = threading.Lock()
        # Set when the repository itself failed: the rest of the build runs uncached.
        self.off = False
        self._refused = False  # the repository refused an entry: store no more
        # Re-run steps whose layer matched their previous entry's (``finish``).
        self.chained_by_layer = 0

    def warn(self, what: str, exc: CacheUnavailable) -> None:
        """A cache problem: a warning, and the build goes on without the cache for this step
        (or, when the repository itself failed, for the rest of the build)."""
        if exc.whole_cache:
            self.off = True
            log.warning("layer cache %s: %s; the build goes on without the layer cache",
                        self.repository.name, exc)
            return
        log.warning("layer cache %s: %s: %s; the step runs normally", self.repository.name,
                    what, exc)

    def fetch(self, tag: str) -> tuple[dict[str, Any], Any] | None:
        return self.repository.fetch_config(tag)

    def save(self, image_config: ImageConfig, layer: Descriptor | None, image_format: str,
             tags: list[str], mount_sources: dict[Digest, str]) -> None:
        """Queue an entry to be written; the build does not wait for it."""
        if not self.settings.push or self.off:
            return
        layers = [layer] if layer is not None else []
        image = store_image(self.store, image_config, layers, image_format)

        def write() -> None:
            self.repository.store(image, tags, mount_sources)
        with self._pusher_lock:  # one pusher, also when stages are built at once (--jobs)
            if self._pusher is None:
                self._pusher = threading.Thread(target=self._push_entries,
                                                name="kanipy-cache-push", daemon=True)
                self._pusher.start()
        self._queue.put(write)

    def _push_entries(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._refused:
                continue
            try:
                job()
            except RegistryError as exc:
                if exc.status in (401, 403):
                    # Refused once, refused for every entry: say it once.
                    self._refused = True
                    log.warning("layer cache %s: new entries cannot be stored: %s",
                                self.repository.name, exc)
                else:
                    log.warning("layer cache %s: could not store an entry: %s",
                                self.repository.name, exc)
            except (KanipyError, CacheUnavailable, OSError) as exc:
                log.warning("layer cache %s: could not store an entry: %s",
                            self.repository.name, exc)
            except Exception as exc:  # a bug must not fail a build the cache only speeds up
                log.warning("layer cache %s: could not store an entry: %r",
                            self.repository.name, exc)

    def close(self, timeout: float = PUSH_WAIT_SECONDS, *, abandon: bool = False) -> None:
        """Wait (at most ``timeout`` seconds) for the entries still being written.

        ``abandon`` (a failed or interrupted build): entries not yet started are dropped,
        and only the one being written is waited for.
        """
        if self._pusher is None:
            return
        if abandon:
            timeout = min(timeout, ABANDON_WAIT_SECONDS)
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
        self._queue.put(None)
        self._pusher.join(timeout)
        if self._pusher.is_alive() and not abandon:
            log.warning("layer cache %s: entries still being pushed after %.0f s are left "
                        "out", self.repository.name, timeout)
        self._pusher = None


class _Expired(Exception):
    """The entry is older than --cache-ttl."""


@dataclass
class StepLookup:
    """One step's key and what the cache said about it."""

    key: str | None  # None: the step always runs (``reason`` says why)
    identity: str
    inputs: KeyInputs | None
    explain: dict[str, Any]
    stores: bool  # whether this kind of step makes entries
    hit: CacheEntry | None = None
    reason: str | None = None
    # On a miss: the entry the same step made last time (its ``kanipy.cache`` fields
    # and diff_id), for chaining by layer (``StageCache.finish``).
    previous: dict[str, Any] | None = None
    # The --build-arg values this step could see, hidden in its entry (``hide_given``).
    given: Mapping[str, str] = field(default_factory=dict)


@dataclass
class HitResult:
    state: StageState
    layer: Descriptor | None
    diff_id: Digest | None
    history: HistoryEntry | None


@dataclass
class StageCache:
    """The key chain of one stage and its lookups (see the module docstring)."""

    cache: LayerCache
    base_id: str
    stage_label: str
    dockerfile: str
    image_format: str
    platform: Platform
    chain: str = ""
    last_miss: str | None = None
    # The layers the stage's root lacks (its base's, then the hits'): see ``flush``.
    root: PendingRoot | None = None
    layer_sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    # False once a cached layer was lost: the stage is built again, every step run.
    hits: bool = True
    # The --build-arg values, which entries never hold in clear (``hide_given``).
    given: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.chain = base_key(self.base_id)

    def lookup(self, ins: Instruction, state: StageState, ctx: StageContext, kind: StepKind,
               position: int) -> StepLookup:
        """The key of the step ``ins`` and, for a step that makes layers, its entry."""
        identity = "sha256:" + hashlib.sha256(
            f"{self.dockerfile}\0{self.stage_label}\0{position}\0{ins.keyword}".encode()
        ).hexdigest()
        explain: dict[str, Any] = {
            "parent": self.chain, "base": self.base_id,
            "args": dict(state.args),
        }
        stores = kind is not StepKind.METADATA and self._enabled_for(ins.keyword)
        try:
            inputs = key_inputs(ins, state, ctx)
        except Uncacheable as exc:
            return StepLookup(None, identity, None, explain, False, reason=str(exc))
        key = step_key(self.chain, ins.keyword, inputs, self.cache.layer_settings)
        explain.update(instruction=inputs.instruction, inputs=dict(inputs.inputs))
        if inputs.content is not None:
            explain["files"] = dict(inputs.content.files)
        # --build-arg values (tokens, often) are kept only as digests: the stored
        # inputs are read back by anyone who can pull the cache, and the miss line is
        # logged. ARG defaults are the Dockerfile's text and stay as they are.
        # Only the ARGs this stage declared with the given value: others reach no input.
        given = {k: v for k, v in self.given.items() if state.args.get(k) == v}
        explain = hide_given(explain, given)
        found = StepLookup(key, identity, inputs, explain, stores, given=given)
        if kind is StepKind.METADATA:
            return found
        if not stores or self.cache.off:
            found.stores = False
            return found
        if not self.hits:
            found.reason = "a cached layer of this stage could not be used"
            return found
        try:
            found.hit = self._fetch_entry(key)
        except _Expired:
            found.reason = "the entry is older than --cache-ttl"
        except CacheUnavailable as exc:
            self.cache.warn(f"entry {_tag('', key)[:12]}", exc)
            found.reason = "the cache could not be read"
        else:
            if found.hit is None:
                found.reason = self._explain_miss(found)
        return found

    def _enabled_for(self, keyword: str) -> bool:
        if keyword == "RUN":
            return self.cache.settings.run_layers
        if keyword in ("COPY", "ADD"):
            return self.cache.settings.copy_layers
        return True

    def _fetch_entry(self, key: str) -> CacheEntry | None:
        found = self.cache.fetch(_tag("", key))
        if found is None:
            return None
        doc, image = found
        meta = doc[CACHE_FIELD]
        if meta.get("key") != key:
            raise CacheUnavailable(f"the entry tagged {_tag('', key)[:12]} is for another key")
        age = _age_seconds(meta.get("created"))
        ttl = self.cache.settings.ttl_seconds
        if ttl > 0 and age is not None and age > ttl:
            raise _Expired()
        layers = image.manifest().layers
        diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or []
        if len(layers) > 1 or len(layers) != len(diff_ids):
            raise CacheUnavailable("the entry's layers do not match its config")
        layer = layers[0] if layers else None
        source = getattr(image, "source", None)
        where = (source.registry, source.repository) if source is not None else None
        # The layer blob is fetched only when the root or an output needs it.
        return CacheEntry(doc, layer, where, image)

    def _explain_miss(self, lookup: StepLookup) -> str:
        try:
            found = self.cache.fetch(_tag("step-", lookup.identity))
        except CacheUnavailable:
            found = None
        if found is None:
            return "no earlier entry for this step"
        meta = dict(found[0][CACHE_FIELD])
        meta["diff_ids"] = (found[0].get("rootfs") or {}).get("diff_ids") or []
        lookup.previous = meta
        old = meta.get("explain") or {}
        return explain_difference(old, lookup.explain, self.last_miss)

    def apply_hit(self, found: StepLookup, ins: Instruction, state: StageState
                  ) -> HitResult | None:
        """Take the entry's layer for the step; None (and a warning) if it cannot be.

        The layer is fetched and unpacked (its diff_id checked) by ``flush``, when
        a step that is run (or a later stage) needs the root, or fetched when an
        output needs its bytes; until then only the entry's config was read.
        """
        entry = found.hit
        assert entry is not None and found.key is not None
        diff_ids = entry.doc.get("rootfs", {}).get("diff_ids") or []
        try:
            history = [HistoryEntry.from_json(_restore_given(h, state)) for h
                       in entry.doc.get("history") or []]
        except _NotRestorable:
            # A literal that looked like a value given then, which differs now: the
            # history text cannot be rebuilt, so the step runs (and makes its entry).
            found.reason = "its history names a --build-arg value that changed"
            return None
        diff_id: Digest | None = None
        if entry.layer is not None:
            try:
                diff_id = Digest.parse(diff_ids[0])
            except ValueError as exc:
                self.cache.warn(f"entry {_tag('', found.key)[:12]}", CacheUnavailable(str(exc)))
                return None
            assert self.root is not None, "stage_cache gives every StageCache a root"
            self.root.add(PendingLayer(entry.layer, _layer_fetcher(self.cache, entry),
                                       diff_id, cached=True,
                                       present=_layer_check(self.cache, entry)))
            if entry.source is not None:
                self.layer_sources[str(entry.layer.digest)] = entry.source
        new_state = state
        if ins.keyword == "WORKDIR":
            new_state = dataclasses.replace(state, config=state.config.with_config(
                working_dir=workdir_path(ins, state)))  # type: ignore[arg-type]
        # An entry made by a re-run that gave the layer of an older entry continues
        # that entry's chain (see ``finish``).
        chain = entry.meta.get("chain")
        self.chain = chain if isinstance(chain, str) and chain.startswith("sha256:") \
            else found.key
        return HitResult(new_state, entry.layer, diff_id, history[0] if history else None)

    def flush(self, rootfs: Rootfs, scope: list[str] | None = None) -> None:
        """Apply the base and the hits so far to the root before a step that is run:
        all of it, or (``scope``) only what the step's paths need (``cache_root``)."""
        if self.root is not None:
            self.root.fill(scope)

    def finish(self, found: StepLookup, ins: Instruction, layer: Descriptor | None,
               diff_id: Digest | None, history: HistoryEntry | None) -> None:
        """After the step ran: extend the chain and, for a miss, write an entry."""
        if found.key is None:
            self.chain = after_uncacheable(self.chain, ins.render(),
                                           str(diff_id) if diff_id else None)
            return
        self.chain = found.key
        if not found.stores:
            return
        if found.hit is None and found.reason is not None:
            self.last_miss = found.reason
        continued = self._same_layer_as_before(found, diff_id)
        doc: dict[str, Any] = {
            "architecture": self.platform.architecture, "os": self.platform.os,
            "rootfs": {"type": "layers", "diff_ids": [str(diff_id)] if diff_id else []},
            "history": [hide_given(history.to_json(), found.given)]
            if history is not None else [],
            "config": {},
            CACHE_FIELD: {"key": found.key, "identity": found.identity,
                          "created": _rfc3339(time.time()), "explain": found.explain},
        }
        if continued is not None:
            doc[CACHE_FIELD]["chain"] = continued
        if self.platform.variant:
            doc["variant"] = self.platform.variant
        mounts = {Digest.parse(d): f"{reg}/{repo}" for d, (reg, repo)
                  in self.layer_sources.items()}
        try:
            self.cache.save(ImageConfig(doc), layer, self.image_format,
                            [_tag("", found.key), _tag("step-", found.identity)], mounts)
        except (KanipyError, OSError) as exc:
            log.warning("layer cache: could not make an entry: %s", exc)


    def _same_layer_as_before(self, found: StepLookup, diff_id: Digest | None) -> str | None:
        """Chaining by layer: the key the chain goes on from after a re-run step, when
        the run gave the very layer of the entry the same step made last time, on the
        same parent. The root is then what it was after that entry, and the steps after
        it can still hit (their own inputs are in their own keys). None otherwise.
        """
        previous = found.previous
        if previous is None:
            return None
        old_parent = (previous.get("explain") or {}).get("parent")
        old_diff = previous.get("diff_ids") or []
        new_diff = [str(diff_id)] if diff_id is not None else []
        old_chain = previous.get("chain") or previous.get("key")
        if old_parent != found.explain.get("parent") or old_diff != new_diff or \
                not isinstance(old_chain, str) or old_chain == found.key:
            return None
        self.chain = old_chain
        self.cache.chained_by_layer += 1
        log.info("%s: the re-run made the same layer as before (%s); the steps after it "
                 "can still hit", found.explain.get("instruction", "step")[:60],
                 (new_diff or ["no layer"])[0][:19],
                 extra={"fields": {"cache": "same-layer", "diff_id": new_diff[0]
                                   if new_diff else None}})
        return old_chain


def _layer_fetcher(cache: LayerCache, entry: CacheEntry) -> Callable[[], None]:
    """Bring the entry's layer into the store; CachedLayerLost (after a warning) if it cannot."""
    layer = entry.layer
    assert layer is not None

    def fetch() -> None:
        try:
            cache.repository.fetch_layer(entry.image, layer, cache.store)
        except CacheUnavailable as exc:
            raise CachedLayerLost(f"cached layer {layer.digest}: {exc}") from None
    return fetch


def _layer_check(cache: LayerCache, entry: CacheEntry) -> Callable[[], bool]:
    layer = entry.layer
    assert layer is not None
    return lambda: cache.repository.has_blob(entry.image, layer)


def explain_difference(old: Mapping[str, Any], new: Mapping[str, Any],
                       earlier: str | None) -> str:
    """Which input changed between the entry ``old`` and this step (``new``), in words."""
    if old.get("base") != new.get("base"):
        return f"base image changed ({_short(old.get('base'))} → {_short(new.get('base'))})"
    old_inputs = old.get("inputs") or {}
    new_inputs = new.get("inputs") or {}
    if old.get("instruction") != new.get("instruction") or \
            {k: v for k, v in old_inputs.items() if k != "content"} != \
            {k: v for k, v in new_inputs.items() if k != "content"}:
        old_args, new_args = old.get("args") or {}, new.get("args") or {}
        for name in sorted(set(old_args) | set(new_args)):
            before, after = old_args.get(name), new_args.get(name)
            if before != after:
                if _is_hidden(before) or _is_hidden(after):
                    return f"ARG {name} changed (value given by --build-arg)"
                return f"ARG {name} changed ({before} → {after})"
    if old.get("instruction") != new.get("instruction"):
        return "the instruction changed"
    old_files, new_files = old.get("files") or {}, new.get("files") or {}
    if old_files != new_files or old_inputs.get("content") != new_inputs.get("content"):
        changes = [f"{_source_name(n)} changed" for n in new_files
                   if n in old_files and old_files[n] != new_files[n]]
        changes += [f"{_source_name(n)} added" for n in new_files if n not in old_files]
        changes += [f"{_source_name(n)} removed" for n in old_files if n not in new_files]
        if changes:
            more = f" (and {len(changes) - 3} more)" if len(changes) > 3 else ""
            return ", ".join(changes[:3]) + more
        return "the sources changed"
    for name in sorted(set(old_inputs) | set(new_inputs)):
        if old_inputs.get(name) != new_inputs.get(name):
            return f"{_INPUT_NAMES.get(name, name)} changed"
    old_args, new_args = old.get("args") or {}, new.get("args") or {}
    for name in sorted(set(old_args) | set(new_args)):
        if old_args.get(name) != new_args.get(name) and \
                (_is_hidden(old_args.get(name)) or _is_hidden(new_args.get(name))):
            return f"ARG {name} changed (value given by --build-arg)"
    if old.get("parent") != new.get("parent"):
        return f"an earlier step changed ({earlier})" if earlier else "an earlier step changed"
    return "the layer settings changed (compression, --reproducible or --ignore-path)"


# --build-arg values shorter than this are hidden only where they stand alone (an
# ARG's value, NAME=VALUE): hiding "1" inside every string would garble the rest.
_HIDE_INSIDE = 4
_HIDDEN = "--build-arg sha256:"
# Left as they are: digests, which a value could only garble.
_NOT_HIDDEN = frozenset({"parent", "base", "files", "created", "content"})


def _hidden(value: str) -> str:
    return _HIDDEN + hashlib.sha256(value.encode()).hexdigest()[:8]


_PLACEHOLDER = re.compile(r"<--build-arg ([^ >]+) sha256:[0-9a-f]{8}>")


def _is_hidden(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_HIDDEN)


def _placeholder(name: str, value: str) -> str:
    """A value inside a string: its ARG's name (to fill it back) and a digest (so that
    a changed value still changes the string)."""
    return f"<--build-arg {name} {_hidden(value).removeprefix('--build-arg ')}>"


def hide_given(doc: Any, given: Mapping[str, str]) -> Any:
    """``doc`` (JSON) with every --build-arg value in ``given`` out of its strings.

    An ARG's own value becomes a short digest (``--build-arg sha256:1a2b3c4d``): a
    changed value still shows as changed. Inside other strings (a RUN's history
    ``|1 TOKEN=...``, an expanded COPY destination) a value becomes a placeholder
    naming its ARG, which a hit fills back from the build's own values
    (``_restore_given``): those are the stored ones, or the key would differ.
    """
    values = sorted(((n, v) for n, v in given.items() if v), key=lambda nv: -len(nv[1]))
    if not values:
        return doc

    def text(value: str) -> str:
        for name, secret in values:
            shown = _placeholder(name, secret)
            if value == f"{name}={secret}":
                return f"{name}={shown}"
            value = value.replace(f" {name}={secret} ", f" {name}={shown} ")
            if len(secret) >= _HIDE_INSIDE:
                value = value.replace(secret, shown)
        return value

    def walk(value: Any, key: str | None = None) -> Any:
        if key in _NOT_HIDDEN:
            return value
        if isinstance(value, str):
            return text(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            if key == "args":
                return {k: _hidden(v) if k in given and v == given[k] and v is not None
                        else walk(v) for k, v in value.items()}
            return {k: walk(v, k) for k, v in value.items()}
        return value
    return walk(doc)


class _NotRestorable(Exception):
    """A placeholder whose ARG has another value now (see ``_restore_given``)."""


def _restore_given(entry: Mapping[str, Any], state: StageState) -> dict[str, Any]:
    """A stored history entry with the placeholders of ``hide_given`` filled again.

    Each is filled only with a value of the same digest: a key covers the values a
    step uses, not a literal that happened to equal a given value.
    """
    out = dict(entry)
    text = out.get("created_by")
    if isinstance(text, str) and "<--build-arg " in text:
        values = {**state.proxy_args, **{k: v for k, v in state.args.items() if v is not None}}

        def fill(match: re.Match[str]) -> str:
            value = values.get(match.group(1))
            if value is None or _placeholder(match.group(1), value) != match.group(0):
                raise _NotRestorable()
            return value
        out["created_by"] = _PLACEHOLDER.sub(fill, text)
    return out


# Inputs as a user would name them in a miss line.
_INPUT_NAMES = {"mounts": "a --mount or the content of its source", "env": "the environment",
                "workdir": "WORKDIR", "user": "USER", "shell": "SHELL"}


def _source_name(name: str) -> str:
    """A source as the user knows it: without the position prefix keys frame it with."""
    return name.partition(":")[2] if ":" in name else name


def _short(value: Any) -> str:
    text = str(value)
    return text[:19] if text.startswith("sha256:") else text


__all__ = ["CacheSettings", "HitResult", "LayerCache", "StageCache", "StepLookup",
           "explain_difference", "parse_duration"]
