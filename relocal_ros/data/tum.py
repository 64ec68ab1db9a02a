"""TUM RGB-D folders: rgb.txt / depth.txt / groundtruth.txt associated by timestamp. A folder whose rgb.txt lists
a subset of the images is a valid source (that is how map/query splits are made); groundtruth.txt is optional."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from relocal_ros.data.frames import RGBDFrame
from relocal_ros.data.trajectory import PoseTrack
from relocal_ros.geometry.camera import Intrinsics, load_calibration_yaml

# TUM's own published defaults for an uncalibrated folder (their point-cloud example), used only without calibration.yaml
TUM_DEFAULT_INTRINSICS = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
TUM_DEPTH_SCALE = 5000.0
MAX_DEPTH_ASSOCIATION_S = 0.02  # TUM's associate.py default


def read_file_list(path: Path) -> list[tuple[str, str]]:
    """rgb.txt / depth.txt -> [(stamp as written, relative file name)]."""
    entries = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{path}:{lineno}: expected 'timestamp filename'")
        float(parts[0])  # validates the stamp
        entries.append((parts[0], parts[1]))
    return entries


def is_tum_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "rgb.txt").is_file()


class TumSequence:
    def __init__(self, folder: Path, with_ground_truth: bool = True):
        self.folder = Path(folder)
        if not is_tum_folder(self.folder):
            raise FileNotFoundError(f"{folder}: not a TUM RGB-D folder (no rgb.txt)")
        calib = self.folder / "calibration.yaml"
        if calib.is_file():
            self.intrinsics, scale = load_calibration_yaml(calib)
            self.depth_scale = scale or TUM_DEPTH_SCALE
        else:
            self.intrinsics, self.depth_scale = TUM_DEFAULT_INTRINSICS, TUM_DEPTH_SCALE
        self.rgb = read_file_list(self.folder / "rgb.txt")
        self.depth_for = {}
        if (self.folder / "depth.txt").is_file():
            depth = read_file_list(self.folder / "depth.txt")
            if depth:
                dt = np.array([float(s) for s, _ in depth])
                for stamp, _ in self.rgb:
                    j = int(np.argmin(np.abs(dt - float(stamp))))
                    if abs(dt[j] - float(stamp)) <= MAX_DEPTH_ASSOCIATION_S:
                        self.depth_for[stamp] = depth[j][1]
        gt = self.folder / "groundtruth.txt"
        self.track = PoseTrack.from_file(gt) if (with_ground_truth and gt.is_file()) else None

    def __len__(self) -> int:
        return len(self.rgb)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> RGBDFrame:
        stamp, rel = self.rgb[i]
        bgr = cv2.imread(str(self.folder / rel), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{self.folder / rel}: missing or unreadable image")
        depth = None
        if stamp in self.depth_for:
            raw = cv2.imread(str(self.folder / self.depth_for[stamp]), cv2.IMREAD_UNCHANGED)
            if raw is None:
                raise FileNotFoundError(f"{self.folder / self.depth_for[stamp]}: missing or unreadable depth")
            depth = raw.astype(np.float32) / self.depth_scale
        pose = self.track.at(float(stamp)) if self.track is not None else None
        return RGBDFrame(stamp, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth, self.intrinsics, pose, rel)
