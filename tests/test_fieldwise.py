"""``kanipy.fieldwise``: frozen dataclasses whose repr, equality and hash are shared.

Each case builds the same class twice, once as a plain frozen dataclass and
once on ``Fieldwise``, and asserts the two behave the same: the repr text,
equality, the hash value, frozen attributes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from kanipy.dockerfile import Command, Run
from kanipy.fieldwise import Fieldwise
from kanipy.oci.descriptor import Platform


@dataclass(frozen=True)
class Generated:
    name: str
    size: int = 0
    secret: str = field(default="", repr=False)
    note: str = field(default="", compare=False)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, repr=False, eq=False)
class Shared(Fieldwise):
    name: str
    size: int = 0
    secret: str = field(default="", repr=False)
    note: str = field(default="", compare=False)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, repr=False, eq=False, kw_only=True)
class Child(Shared):
    extra: int = 1


@dataclass(frozen=True, repr=False, eq=False)
class One(Fieldwise):
    only: str


@dataclass(frozen=True)
class GeneratedOne:
    only: str


VALUES = [
    {"name": "a"},
    {"name": "b", "size": 3, "secret": "s3cret", "note": "n", "tags": ("x", "y")},
    {"name": "", "size": -1, "tags": ()},
]


@pytest.mark.parametrize("values", VALUES, ids=["defaults", "every-field", "empty"])
def test_repr_and_hash_are_the_generated_ones(values: dict[str, object]) -> None:
    generated, shared = Generated(**values), Shared(**values)  # type: ignore[arg-type]
    assert repr(shared) == repr(generated).replace("Generated(", "Shared(", 1)
    assert "s3cret" not in repr(shared)  # repr=False fields stay out
    assert hash(shared) == hash(generated)
    assert shared == Shared(**values)  # type: ignore[arg-type]
    assert hash(One("x")) == hash(GeneratedOne("x"))
    assert repr(One("x")) == "One(only='x')"


def test_equality_follows_the_compared_fields_and_the_class() -> None:
    assert Shared("a", note="one") == Shared("a", note="two")  # compare=False
    assert hash(Shared("a", note="one")) == hash(Shared("a", note="two"))
    assert Shared("a", secret="1") != Shared("a", secret="2")  # repr=False still compares
    assert Shared("a", 1) != Shared("a", 2)
    # Like a generated __eq__: only the same class, so a subclass never equals its base.
    assert Child("a") != Shared("a")
    assert Shared("a") != ("a", 0, "", ())
    assert Shared("a").__eq__(object()) is NotImplemented
    assert Child("a", extra=2) == Child("a", extra=2) != Child("a", extra=3)
    assert repr(Child("a", extra=2)) == "Child(name='a', size=0, note='', tags=(), extra=2)"
    assert len({Shared("a"), Shared("a"), Shared("b")}) == 2


def test_instances_stay_frozen_and_replaceable() -> None:
    value = Shared("a", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.size = 2  # type: ignore[misc]
    assert dataclasses.replace(value, size=2) == Shared("a", 2)
    assert dataclasses.asdict(value)["size"] == 1


def test_kanipy_values_compare_and_show_by_field() -> None:
    run = Run(line=3, original="RUN make", command=Command(("make",), False))
    assert run == Run(line=3, original="RUN make", command=Command(("make",), False))
    assert run != Run(line=4, original="RUN make", command=Command(("make",), False))
    assert repr(run).startswith("Run(keyword='RUN', line=3, original='RUN make', "
                                "command=Command(args=('make',), exec_form=False)")
    assert {Platform.parse("linux/amd64"), Platform.parse("linux/amd64")} == \
        {Platform.parse("linux/amd64")}
