"""Layer cache keys: what a step's result depends on, computed before the step runs.

A key is a sha256 over one canonical JSON document (sorted keys, no
whitespace choices), so that no two different sets of inputs encode to the
same bytes. The document holds:

* ``parent``: the previous step's key, or for a stage's first step the base
  (an image's manifest digest and platform, scratch and its platform, or the
  key an earlier stage ended on);
* the instruction after expansion and the state it runs in (USER, WORKDIR,
  SHELL, the environment RUN sees);
* content, never mtimes: COPY/ADD sources after ``.dockerignore`` (path, type,
  mode, link target, bytes; owners where they are copied, which is from a
  ``--from`` root, not from the context), ``RUN --mount=type=bind`` sources
  likewise, ``ADD --checksum`` URLs by their checksum;
* how layers are written (compression, level, time clamp, media type,
  ``--ignore-path``), since a cached layer is reused byte for byte.

Secrets never enter a key: a secret mount is keyed by its id and target only.
Steps whose result cannot be known beforehand (ADD of a URL without
``--checksum``, ADD of a git repository) have no key: they always run, and
the chain continues from the layer they made (``after_uncacheable``).

Beside the key, ``StepKey.explain`` keeps the same inputs in a form that can
be compared with an older entry's, to say why a step missed (per-file
digests, ARG values).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kanipy.context import BuildContext
from kanipy.dockerfile import Add, Arg, Copy, Instruction, Run, Workdir
from kanipy.executor.handlers.copy import copy_inputs, source_root_for
from kanipy.executor.handlers.copy_sources import SourceFinder
from kanipy.executor.handlers.download import is_git_url, is_url
from kanipy.executor.step import StageContext, StageState, StepError
from kanipy.fieldwise import Fieldwise

KEY_VERSION = "kanipy-layer-cache-v1"
# Per-file digests kept for explaining misses; beyond this only the total is kept.
EXPLAIN_FILES = 2000
_CHUNK = 1 << 20


def canonical(doc: Any) -> bytes:
    """The one byte encoding of ``doc`` that keys are taken over."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def digest_of(doc: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical(doc)).hexdigest()


class Uncacheable(Exception):
    """The step's result cannot be known before it runs; the message says why."""


@dataclass(frozen=True, repr=False, eq=False)
class ContentDigest(Fieldwise):
    """The content of a set of source paths: a total digest and (up to a bound) one per file."""

    total: str
    files: Mapping[str, str] = field(default_factory=dict)


def hash_tree(sources: list[tuple[Path, str]], context: BuildContext | None,
              with_owners: bool) -> ContentDigest:
    """Digest of what copying ``sources`` (host path, name) would read.

    A source that is a directory is walked in name order without following
    links; ``context`` (the build context) leaves out what ``.dockerignore``
    excludes. mtimes, atimes, ctimes and inode numbers never count.
    """
    total = hashlib.sha256()
    files: dict[str, str] = {}

    def record(name: str, rel: str | None, host: str, st: os.stat_result) -> None:
        kind = stat.S_IFMT(st.st_mode)
        doc: list[Any] = [name, kind, stat.S_IMODE(st.st_mode)]
        if with_owners:
            doc += [st.st_uid, st.st_gid]
        if stat.S_ISLNK(st.st_mode):
            doc.append(os.readlink(host))
        elif stat.S_ISREG(st.st_mode):
            doc.append(_file_digest(host))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            doc.append(st.st_rdev)
        encoded = canonical(doc)
        total.update(len(encoded).to_bytes(8, "big"))
        total.update(encoded)
        if len(files) < EXPLAIN_FILES:
            files[name] = hashlib.sha256(encoded).hexdigest()[:16]

    def walk(host: str, name: str, rel: str | None) -> None:
        with os.scandir(host) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            child_rel = posixpath.join(rel, entry.name) if rel is not None else None
            child_name = posixpath.join(name, entry.name)
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if context is not None and child_rel is not None and context.excluded(child_rel):
                if not (is_dir and context.ignore.must_walk(child_rel)):
                    continue
            record(child_name, child_rel, entry.path, st)
            if is_dir:
                walk(entry.path, child_name, child_rel)

    for host, name in sources:
        st = os.stat(host)  # a top-level link is followed, as COPY follows it
        record(name, name, str(host), st)
        if stat.S_ISDIR(st.st_mode):
            walk(str(host), name, name if context is not None else None)
    return ContentDigest("sha256:" + total.hexdigest(), files)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, repr=False, eq=False)
class KeyInputs(Fieldwise):
    """What one step's key is made of, besides its parent and the layer settings."""

    instruction: str
    inputs: Mapping[str, Any]
    content: ContentDigest | None = None


KeyInputsFunction = Callable[[Any, StageState, StageContext], KeyInputs]


def run_key_inputs(ins: Run, state: StageState, ctx: StageContext) -> KeyInputs:
    """RUN: its command and flags (not expanded: the shell expands them), the shell,
    the environment it sees, user, workdir, network; bind mounts by content."""
    # The predefined proxy ARGs are left out unless the stage declares them, as
    # BuildKit leaves them out of its cache (Dockerfile reference, "Predefined
    # ARGs"): a proxy URL may carry credentials and differs between CI runners.
    env = {k: v for k, v in state.run_args().items()
           if k not in state.proxy_args or k in state.args}
    for item in state.config.env:
        key, _, value = item.partition("=")
        env[key] = value
    mounts: list[Any] = []
    for m in ins.mounts:
        # The mount as written: a secret's id and target, never its value.
        entry: dict[str, Any] = {"spec": m.spec}
        if m.type == "bind":
            root, context = _mount_root(m.from_, ctx)
            source = posixpath.normpath("/" + (m.source or "")).lstrip("/")
            finder = SourceFinder(root, context, "the mount source", "RUN --mount")
            found = finder.find(source or ".")
            entry["content"] = hash_tree([(s.host, s.rel) for s in found], context,
                                         with_owners=context is None).total
        mounts.append(entry)
    inputs = {
        "command": ins.render(), "shell": state.shell, "env": sorted(f"{k}={v}" for k, v
                                                                     in env.items()),
        "user": state.user, "workdir": state.workdir, "network": ins.network or "default",
        "security": ins.security, "mounts": mounts,
        "heredocs": [[doc.name, doc.content, doc.stripped_content] for doc in ins.heredocs],
    }
    return KeyInputs(ins.render(), inputs)


def _mount_root(from_: str | None, ctx: StageContext) -> tuple[Path, BuildContext | None]:
    if not from_:
        return ctx.context.root, ctx.context
    return source_root_for(from_, ctx), None


def copy_key_inputs(ins: Copy, state: StageState, ctx: StageContext) -> KeyInputs:
    """COPY/ADD: sources, destination and flags as expanded, and the sources' content."""
    inputs = copy_inputs(ins, state)
    inputs["user"] = state.user
    sources: list[tuple[Path, str]] = []
    urls: list[str] = []
    context: BuildContext | None = ctx.context
    if ins.from_:
        root, context = _mount_root(ins.from_, ctx)
    else:
        root = ctx.context.root
    finder = SourceFinder(root, context, "the sources", ins.keyword)
    for pattern in ins.sources:
        if isinstance(ins, Add) and is_git_url(pattern):
            raise Uncacheable("ADD of a git repository is fetched every time")
        if isinstance(ins, Add) and is_url(pattern):
            if not ins.checksum:
                raise Uncacheable("ADD of a URL without --checksum is fetched every time")
            urls.append(pattern)  # keyed by --checksum, already in the inputs
            continue
        # Each pattern is framed by its position: the same files through other
        # patterns copy to other places.
        sources += [(s.host, f"{len(sources)}:{s.rel}") for s in finder.find(pattern)]
    content = hash_tree(sources, context, with_owners=context is None)
    inputs["content"] = content.total
    return KeyInputs(ins.render(), inputs, content)


def workdir_key_inputs(ins: Workdir, state: StageState, ctx: StageContext) -> KeyInputs:
    """WORKDIR: the directory (made absolute against the previous WORKDIR) and the USER
    that would own what it creates."""
    return KeyInputs(ins.render(), {"path": workdir_path(ins, state), "user": state.user})


def workdir_path(ins: Workdir, state: StageState) -> str:
    """The absolute WORKDIR path, as ``handle_workdir`` computes it."""
    path = ins.path
    if not posixpath.isabs(path):
        path = posixpath.join(state.workdir, path)
    path = posixpath.normpath(path)
    return path[1:] if path.startswith("//") else path


def metadata_key_inputs(ins: Instruction, state: StageState, ctx: StageContext) -> KeyInputs:
    """Metadata steps: the expanded instruction; they extend the chain, store nothing."""
    return KeyInputs(ins.render(), {})


def arg_key_inputs(ins: Arg, state: StageState, ctx: StageContext) -> KeyInputs:
    """ARG: only the names. A value counts where it is used (a RUN's environment, an
    expanded word), as in BuildKit, so an ARG nothing uses busts nothing."""
    return KeyInputs("ARG " + " ".join(name for name, _ in ins.pairs), {})


# Beside the handler table: how each layer-making keyword's key inputs are found.
# Every other keyword is metadata (``metadata_key_inputs``).
KEY_INPUTS: dict[str, KeyInputsFunction] = {
    "RUN": run_key_inputs,
    "COPY": copy_key_inputs,
    "ADD": copy_key_inputs,
    "WORKDIR": workdir_key_inputs,
    "ARG": arg_key_inputs,
}


def key_inputs(ins: Instruction, state: StageState, ctx: StageContext) -> KeyInputs:
    """The key inputs of ``ins``; raises Uncacheable for a step that must always run.

    A source that cannot be found makes the step uncacheable here: the handler
    then reports the missing source as it always does.
    """
    function = KEY_INPUTS.get(ins.keyword, metadata_key_inputs)
    try:
        return function(ins, state, ctx)
    except (StepError, KeyError, OSError) as exc:
        raise Uncacheable(f"its inputs could not be read ({exc})") from None


def step_key(parent: str, keyword: str, inputs: KeyInputs, layer: Mapping[str, Any]) -> str:
    """The key of one step: a digest over everything it depends on."""
    return digest_of({
        "version": KEY_VERSION, "parent": parent, "keyword": keyword,
        "instruction": inputs.instruction, "inputs": inputs.inputs, "layer": layer,
    })


def base_key(base_id: str) -> str:
    """The parent of a stage's first step."""
    return digest_of({"version": KEY_VERSION, "base": base_id})


def after_uncacheable(key_parent: str, instruction: str, diff_id: str | None) -> str:
    """The chain after a step that always runs: what it actually made decides the rest."""
    return digest_of({"version": KEY_VERSION, "parent": key_parent, "ran": instruction,
                      "layer": diff_id})
