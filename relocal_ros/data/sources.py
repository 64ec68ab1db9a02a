"""One entry point for every kind of RGB-D source the command line accepts."""
from __future__ import annotations

from pathlib import Path

from relocal_ros.data.sevenscenes import SevenScenesSequence, is_sevenscenes_folder
from relocal_ros.data.tum import TumSequence, is_tum_folder


def is_bag(path: Path) -> bool:
    path = Path(path)
    return path.suffix in (".mcap", ".db3") or (path.is_dir() and (path / "metadata.yaml").is_file())


def open_source(path, with_ground_truth: bool = True):
    """A TUM folder, a 7-Scenes (or 3DMatch) scene or sequence folder, or a ROS 2 bag (.mcap / .db3 / bag directory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if is_tum_folder(path):
        return TumSequence(path, with_ground_truth)
    if is_bag(path):
        from relocal_ros.data.bags import BagSource  # rosbags is only imported when a bag is read
        return BagSource(path)
    if is_sevenscenes_folder(path):
        return SevenScenesSequence(path, with_ground_truth)
    raise ValueError(f"{path}: not a TUM RGB-D folder (rgb.txt), a 7-Scenes folder (seq-XX/frame-*.color.png) "
                     f"or a ROS 2 bag (.mcap, .db3, or a folder with metadata.yaml)")
