"""Where the package's shipped files (models/: network weights, vocabularies; config/) are, wherever it runs from:

1. the source tree (a checkout, `pip install -e`, colcon --symlink-install): <repo>/models beside relocal_ros/;
2. an installed package (`pip install .`, a wheel, colcon): <prefix>/share/relocal_ros/<kind>, where setup.py's
   data_files put them, for the prefix of this interpreter (sys.prefix, also a venv) and of this module's
   install location (site-packages three levels under its prefix);
3. the ament index (a sourced ROS 2 workspace): get_package_share_directory("relocal_ros")/<kind>.

The first directory that exists wins. RELOCAL_MODELS_DIR overrides the models directory."""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "relocal_ros"
_HERE = Path(__file__).resolve().parent          # .../relocal_ros


def _prefixes() -> list[Path]:
    out = [Path(sys.prefix), Path(sys.base_prefix)]
    # <prefix>/lib/pythonX.Y/site-packages/relocal_ros -> <prefix>
    if len(_HERE.parents) >= 4 and _HERE.parent.name in ("site-packages", "dist-packages"):
        out.insert(0, _HERE.parents[3])
    return out


def _ament_share() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # not installed, or the package is not in a sourced workspace
        return None


def candidates(kind: str) -> list[Path]:
    """Every place `kind` ('models', 'config', 'launch') may be, in the order they are tried."""
    out = [_HERE.parent / kind]
    out += [p / "share" / PACKAGE / kind for p in _prefixes()]
    share = _ament_share()
    if share is not None:
        out.append(share / kind)
    return out


@lru_cache(maxsize=None)
def resource_dir(kind: str) -> Path:
    """The first existing directory of `kind`; when none exists, the source-tree location (so that error
    messages name a path, and training scripts write where the source tree expects their output)."""
    if kind == "models" and os.environ.get("RELOCAL_MODELS_DIR"):
        return Path(os.environ["RELOCAL_MODELS_DIR"])
    for c in candidates(kind):
        if c.is_dir():
            return c
    return _HERE.parent / kind


def models_dir() -> Path:
    return resource_dir("models")


def model_path(name: str) -> Path:
    """A shipped model file by name (the path may not exist: callers check and say which file is missing)."""
    for d in ([models_dir()] + [c for c in candidates("models") if c != models_dir()]):
        if (d / name).is_file():
            return d / name
    return models_dir() / name
