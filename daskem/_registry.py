"""Which estimator class goes with which model family.

Estimator modules register themselves here when imported. The engine finds
the family of an estimator from its class, and :func:`daskem.load` finds the
class to build from the estimator name stored in a model file, importing the
estimator's module first (only daskem's own modules) so that it registers.
This keeps persistence from importing the estimators, and the estimators
from being imported by anything below them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from ._model import MixtureFamily

FamilyFactory = Callable[[Mapping[str, Any]], MixtureFamily]

_FACTORIES: dict[type, FamilyFactory] = {}
_CLASSES: dict[str, type] = {}


def estimator_name(cls: type) -> str:
    """The name stored in model files: ``module.QualifiedName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type, family: FamilyFactory) -> type:
    """Register an estimator class and the factory of its family (from ``get_params()``)."""
    _FACTORIES[cls] = family
    _CLASSES[estimator_name(cls)] = cls
    return cls


def estimator_class(name: str) -> type:
    """The registered estimator class stored under ``name`` in a model file.

    Raises
    ------
    ValueError
        If no daskem estimator has that name.
    """
    if name not in _CLASSES and isinstance(name, str) and name.startswith("daskem."):
        module = name.rpartition(".")[0]
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    if name not in _CLASSES:
        known = ", ".join(sorted(_CLASSES)) or "none"
        raise ValueError(f"it holds a {name!r}, not a daskem estimator (known: {known})")
    return _CLASSES[name]


def family_of(estimator: Any) -> MixtureFamily:
    """The model family of an estimator, built from its current parameters."""
    for cls in type(estimator).__mro__:
        if cls in _FACTORIES:
            return _FACTORIES[cls](estimator.get_params(deep=False))
    raise TypeError(f"{type(estimator).__name__} is not a registered daskem estimator")
