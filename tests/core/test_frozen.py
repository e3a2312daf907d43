"""``quick_init``: the faster ``__init__`` of the frozen model classes behaves as the
dataclass's own."""

import dataclasses

import pytest

from journeygate.frozen import quick_init
from journeygate.model import RequestContext, VisitorState


def counter():
    counter.made += 1
    return [counter.made]


counter.made = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Plain:
    name: str
    size: int = 3
    tags: list = dataclasses.field(default_factory=counter)


Quick = quick_init(
    dataclasses.make_dataclass(
        "Quick",
        [
            ("name", str),
            ("size", int, 3),
            ("tags", list, dataclasses.field(default_factory=counter)),
        ],
        frozen=True,
        slots=True,
    )
)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("a",), {}), (("a", 5), {}), ((), {"name": "a", "tags": ["x"]}), (("a",), {"size": 0})],
)
def test_same_fields_as_the_dataclass_init(args, kwargs):
    plain, quick = Plain(*args, **kwargs), Quick(*args, **kwargs)
    assert dataclasses.astuple(plain)[:2] == dataclasses.astuple(quick)[:2]
    if "tags" in kwargs:
        assert quick.tags is kwargs["tags"]
    else:
        assert Quick("b").tags is not Quick("b").tags  # a fresh default per object


def test_still_frozen_and_still_a_dataclass():
    quick = Quick("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.size = 4
    assert dataclasses.replace(quick, size=9).size == 9
    assert Quick("a", 1, [1]) == Quick("a", 1, [1])
    assert repr(Quick("a", 1, [1])) == "Quick(name='a', size=1, tags=[1])"


def test_wrong_arguments_are_refused_as_by_the_dataclass():
    with pytest.raises(TypeError):
        Quick()
    with pytest.raises(TypeError):
        Quick("a", colour="red")
    with pytest.raises(TypeError):
        Quick("a", 1, [], "extra")


def test_only_frozen_slots_dataclasses_are_accepted():
    with pytest.raises(TypeError, match="frozen slots dataclass"):
        quick_init(dataclasses.dataclass(frozen=True)(type("Loose", (), {"__annotations__": {}})))
    with pytest.raises(TypeError, match="__post_init__"):

        @quick_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class Checked:
            value: int

            def __post_init__(self):
                pass


def test_the_model_classes_use_it():
    assert "_NO_VALUE" in RequestContext.__init__.__globals__  # written by quick_init
    assert RequestContext().page.type == "other"
    assert VisitorState(stage="decision").attributes == {}
