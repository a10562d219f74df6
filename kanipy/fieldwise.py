"""One ``__repr__``, ``__eq__`` and ``__hash__`` for kanipy's frozen dataclasses.

Python 3.11's ``dataclass`` writes the source of each generated method and
compiles it when the class is made; a frozen dataclass gets six. A build
loads about 75 of them before its first step, and those compilations were
about a tenth of a busybox build's instructions (issue 14, fixed costs). A
frozen dataclass declared ``@dataclass(frozen=True, repr=False, eq=False)``
on ``Fieldwise`` has ``__init__``, ``__setattr__`` and ``__delattr__``
generated as before, and takes these three from here: computed from its
fields exactly as the generated ones are (the same fields, the same order,
``repr=False``, ``compare=False`` and ``hash=`` honoured), only looked up when
they are first called rather than compiled for every class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from operator import attrgetter
from typing import Any

# Per class: the fields in the repr, and the getters of the tuples __eq__
# compares and __hash__ hashes.
_Plan = tuple[tuple[str, ...], Callable[[Any], Any], Callable[[Any], Any]]
_PLANS: dict[type, _Plan] = {}


def _tuple_getter(names: list[str]) -> Callable[[Any], Any]:
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        get = attrgetter(names[0])
        return lambda obj: (get(obj),)
    return attrgetter(*names)  # a tuple, in C


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        every = fields(cls)  # type: ignore[arg-type]  # a dataclass, by contract
        compared = [f.name for f in every if f.compare]
        hashed = [f.name for f in every if (f.compare if f.hash is None else f.hash)]
        plan = _PLANS[cls] = (tuple(f.name for f in every if f.repr),
                              _tuple_getter(compared), _tuple_getter(hashed))
    return plan


class Fieldwise:
    """Base of a frozen dataclass declared with ``repr=False, eq=False``."""

    __slots__ = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}"
                          for name in _plan(type(self))[0])
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            compared = _plan(self.__class__)[1]
            return bool(compared(self) == compared(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_plan(self.__class__)[2](self))
