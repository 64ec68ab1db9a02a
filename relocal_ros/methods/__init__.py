"""The localization methods, one file each (each names its class `METHOD`; base.py is the contract). Found by
listing this package: adding a method is adding a file. Method modules import their heavy parts (torch, networks)
only when a method is built, so listing them costs nothing."""
from __future__ import annotations

import functools
import importlib
import pkgutil

DEFAULT_METHOD = "xfeat_pnp"


@functools.cache
def registry() -> dict[str, type]:
    """{name: method class}, the default first."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        cls = getattr(importlib.import_module(f"{__name__}.{info.name}"), "METHOD", None)
        if cls is None:
            continue
        if cls.name in found:
            raise RuntimeError(f"two methods are called {cls.name!r}")
        found[cls.name] = cls
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != DEFAULT_METHOD, kv[0])))


def method_names() -> tuple[str, ...]:
    return tuple(registry())


def method_class(name: str) -> type:
    try:
        return registry()[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {list(registry())}") from None


def method_settings() -> tuple:
    """Every method's own settings (a shared tuple counted once)."""
    out = []
    for cls in registry().values():
        out += [s for s in cls.settings if s not in out]
    return tuple(out)
