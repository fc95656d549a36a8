"""Backends run deployed pipeline versions behind one protocol (`base.Backend`); chosen by name, imported lazily."""

from __future__ import annotations

import importlib
from typing import Any

from finalmile.errors import BadRequestError

# backend name -> (module, class)
_BACKENDS: dict[str, tuple[str, str]] = {"local": ("finalmile.backends.local", "LocalBackend")}


def backend_class(name: str) -> Any:
    """The class of the backend called `name` (`local`), imported only when asked for."""
    if name not in _BACKENDS:
        raise BadRequestError(f"backend: unknown backend {name!r}; use {', '.join(_BACKENDS)}", {"backend": name})
    module, cls = _BACKENDS[name]
    return getattr(importlib.import_module(module), cls)
