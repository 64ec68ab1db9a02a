"""TUM RGB-D folders: rgb.txt / depth.txt / groundtruth.txt associated by timestamp. A folder whose rgb.txt lists
a subset of the images is a valid source (that is how map/query splits are made); groundtruth.txt is optional."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np

from relocal_ros.data.frames import CAMERA_MATRIX_FILE, RGBDFrame, check_colour_size, depth_in_metres, first_image_size
from relocal_ros.data.trajectory import PoseTrack
from relocal_ros.geometry.camera import Intrinsics, load_calibration_yaml, load_intrinsics_matrix

log = logging.getLogger(__name__)

# TUM's own published defaults for a camera it cannot name (their point-cloud example), used only without
# calibration.yaml
TUM_DEFAULT_INTRINSICS = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
# TUM's calibrated colour cameras (the benchmark's camera calibration page; also ORB_SLAM2's TUM1/2/3.yaml), OpenCV
# radial-tangential model: a TUM download has no calibration.yaml, but names its camera in its folder name and in
# rgb.txt's header ("# file: 'rgbd_dataset_freiburg2_xyz.bag'"). fr1's k1 = 0.26 moves corner pixels by ~25 px: the
# 525 default would bend every map point and query ray there. fr3's images are stored undistorted.
TUM_CAMERAS = {
    "freiburg1": Intrinsics(517.306408, 516.469215, 318.643040, 255.313989, 640, 480,
                            (0.262383, -0.953104, -0.005358, 0.002628, 1.163314)),
    "freiburg2": Intrinsics(520.908620, 521.007327, 325.141442, 249.701764, 640, 480,
                            (0.231222, -0.784899, -0.003257, -0.000105, 0.917205)),
    "freiburg3": Intrinsics(535.4, 539.2, 320.1, 247.6, 640, 480),
}
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


def header_lines(path: Path) -> list[str]:
    """The comment lines at the top of rgb.txt / depth.txt."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.startswith("#"):
                break
            out.append(line.strip())
    return out


def tum_camera(folder: Path, rgb: list[tuple[str, str]]) -> str | None:
    """Which TUM camera ("freiburg1".."freiburg3") recorded this folder, from what names it: rgb.txt's header, the
    folder's path, or where its images really are (a split links them); None when nothing does."""
    folder = Path(folder)
    clues = header_lines(folder / "rgb.txt") + [str(folder.absolute()), str(folder.resolve())]
    if rgb:
        clues.append(str((folder / rgb[0][1]).resolve()))
    for clue in clues:
        found = re.findall(r"freiburg([123])", clue)
        if found:
            return f"freiburg{found[-1]}"  # the innermost name: a folder may sit under another sequence's
    return None


def is_tum_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "rgb.txt").is_file()


class TumSequence:
    def __init__(self, folder: Path, with_ground_truth: bool = True):
        self.folder = Path(folder)
        if not is_tum_folder(self.folder):
            raise FileNotFoundError(f"{folder}: not a TUM RGB-D folder (no rgb.txt)")
        self.rgb = read_file_list(self.folder / "rgb.txt")
        calib = self.folder / "calibration.yaml"
        matrix = self.folder / CAMERA_MATRIX_FILE
        self.camera = None
        self.depth_scale = TUM_DEPTH_SCALE
        if calib.is_file():
            self.intrinsics, scale = load_calibration_yaml(calib)
            self.depth_scale = scale or TUM_DEPTH_SCALE
        elif matrix.is_file():  # a recording converted from 3DMatch / SUN3D keeps its camera matrix
            self.intrinsics = load_intrinsics_matrix(matrix, *first_image_size(
                [self.folder / rel for _, rel in self.rgb[:5]], TUM_DEFAULT_INTRINSICS))
            log.info("%s: no calibration.yaml; the camera matrix of %s, no distortion", self.folder, matrix.name)
        else:
            self.camera = tum_camera(self.folder, self.rgb)
            self.intrinsics = TUM_CAMERAS.get(self.camera, TUM_DEFAULT_INTRINSICS)
            if self.camera:
                log.info("%s: no calibration.yaml; TUM's calibration of the %s camera", self.folder, self.camera)
            else:  # shown by default: every pose rests on these numbers, and a guess must not pass unseen
                log.warning("%s: no calibration.yaml, no %s, and nothing names a TUM camera: TUM's 525 px defaults "
                            "and no distortion are assumed; add a calibration.yaml (README) for this camera",
                            self.folder, CAMERA_MATRIX_FILE)
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
        check_colour_size(bgr, self.intrinsics, str(self.folder / rel))
        depth = None
        if stamp in self.depth_for:
            raw = cv2.imread(str(self.folder / self.depth_for[stamp]), cv2.IMREAD_UNCHANGED)
            if raw is None:
                raise FileNotFoundError(f"{self.folder / self.depth_for[stamp]}: missing or unreadable depth")
            depth = depth_in_metres(raw, (bgr.shape[1], bgr.shape[0]), self.depth_scale,
                                    str(self.folder / self.depth_for[stamp]))
        pose = self.track.at(float(stamp)) if self.track is not None else None
        return RGBDFrame(stamp, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth, self.intrinsics, pose, rel)
