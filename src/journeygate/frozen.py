"""A faster ``__init__`` for frozen slots dataclasses, with the same behaviour.

A decision builds about a dozen frozen objects (the request, the stored visitor, the visitor
state, the context, an offer). The ``__init__`` that ``dataclasses`` writes for a frozen
class sets each field through ``object.__setattr__``, and a call with keyword arguments adds
to that: 2.8 µs for a seven-field object on these machines, against 1.2 µs when each slot is
filled through its own member descriptor, which is what :func:`quick_init` writes. The
objects stay frozen (assigning a field still raises ``FrozenInstanceError``), and equality,
hashing, ``repr`` and ``dataclasses.replace`` are the dataclass's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_NO_VALUE = object()  # stands in for a default that a factory makes per object


def quick_init(cls: type[T]) -> type[T]:
    """Replace the ``__init__`` of ``cls``, a ``@dataclass(frozen=True, slots=True)`` class,
    by one with the same parameters (positional or keyword, defaults and default factories)
    that fills the slots directly. Apply it above the ``@dataclass`` decorator."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: quick_init needs a frozen slots dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init does not call __post_init__")
    namespace: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    parameters, body = [], []
    fields: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(cls)  # type: ignore[arg-type]
    for index, field in enumerate(fields):
        if not field.init or field.kw_only:
            raise TypeError(f"{cls.__name__}.{field.name}: quick_init needs plain init fields")
        setter = f"_set_{index}"
        namespace[setter] = cls.__dict__[field.name].__set__
        if field.default is not dataclasses.MISSING:
            namespace[f"_default_{index}"] = field.default
            parameters.append(f"{field.name}=_default_{index}")
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{index}"] = field.default_factory
            parameters.append(f"{field.name}=_NO_VALUE")
            body.append(f"if {field.name} is _NO_VALUE: {field.name} = _factory_{index}()")
        else:
            parameters.append(field.name)
        body.append(f"{setter}(self, {field.name})")
    source = f"def __init__(self, {', '.join(parameters)}):\n" + "".join(
        f"    {line}\n" for line in body or ["pass"]
    )
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 -- mypy refuses a direct assignment
    return cls
