"""7-Scenes layout: SCENE/seq-XX/frame-XXXXXX.{color.png|color.jpg, depth.png, pose.txt}; also what `relocal synth`
writes (plus SCENE/calibration.yaml) and 3DMatch's RGB-D scenes (plus SCENE/camera-intrinsics.txt). A path may
name the scene (all seq-* folders) or one seq folder. Stamps are seq_number*100000 + frame_index, so a frame keeps
its stamp whichever of the two is opened (a folder not named seq-NN is sequence 0)."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from relocal_ros.data.frames import CAMERA_MATRIX_FILE, RGBDFrame, check_colour_size, depth_in_metres, first_image_size
from relocal_ros.geometry.camera import Intrinsics, load_calibration_yaml, load_intrinsics_matrix, register_depth
from relocal_ros.geometry.poses import is_rigid, orthonormalize

# 7-Scenes colour camera as used by DSAC/DSAC++ and kapture. The depth comes from the Kinect's own depth camera
# (f = 585, 7-Scenes project page) and is not registered to the colour image: readers re-project it into the colour
# camera (geometry.camera.register_depth) with the Kinect v1's 2.5 cm IR-to-colour baseline along x. Measured on the
# 12 frames of ../shared/data's stairs sample: colour/depth edge correlation 0.17 as stored, 0.23 registered
# (sign and size of the baseline: the best of -5..+2.5 cm).
SEVEN_SCENES_INTRINSICS = Intrinsics(525.0, 525.0, 320.0, 240.0, 640, 480)
SEVEN_SCENES_DEPTH_INTRINSICS = Intrinsics(585.0, 585.0, 320.0, 240.0, 640, 480)
SEVEN_SCENES_T_COLOUR_DEPTH = (-0.025, 0.0, 0.0)
SEVEN_SCENES_DEPTH_SCALE = 1000.0
SEQUENCE_STRIDE = 100000  # stamp = sequence number * SEQUENCE_STRIDE + frame number
_FRAME = re.compile(r"frame-(\d+)\.color\.(png|jpg)$")
_SEQ = re.compile(r"seq-?(\d+)$")


def is_sevenscenes_folder(path: Path) -> bool:
    path = Path(path)
    if not path.is_dir():
        return False
    return any(path.glob("frame-*.color.*")) or any(p.is_dir() and _SEQ.search(p.name) for p in path.iterdir())


def read_pose_file(path: Path) -> np.ndarray:
    T = np.loadtxt(path, dtype=float)
    if T.shape != (4, 4) or not is_rigid(T, tol=5e-3):
        raise ValueError(f"{path}: not a 4x4 rigid camera-to-world transform")
    return orthonormalize(T)


def _scene_file(path: Path, name: str) -> Path | None:
    """The scene's file `name`, beside the sequence folders or in the one opened."""
    return next((c for c in (path / name, path.parent / name) if c.is_file()), None)


def _pose_sigma(calib: Path):
    """(m, deg) accuracy of the sequence's poses when its calibration.yaml states it (synthetic scenes: exact)."""
    import yaml
    d = yaml.safe_load(calib.read_text()) or {}
    if "pose_sigma_m" in d and "pose_sigma_deg" in d:
        return float(d["pose_sigma_m"]), float(d["pose_sigma_deg"])
    return None


class SevenScenesSequence:
    def __init__(self, path: Path, with_ground_truth: bool = True):
        path = Path(path)
        if not is_sevenscenes_folder(path):
            raise FileNotFoundError(f"{path}: not a 7-Scenes folder (no seq-XX/ or frame-*.color.* files)")
        seq_dirs = [path] if any(path.glob("frame-*.color.*")) else sorted(
            p for p in path.iterdir() if p.is_dir() and _SEQ.search(p.name))
        self.intrinsics, self.depth_scale = SEVEN_SCENES_INTRINSICS, SEVEN_SCENES_DEPTH_SCALE
        self.pose_sigma = None  # unknown: the solver's default floor applies
        self.register_depth = True  # real 7-Scenes: depth from the separate depth camera; calibrated folders
                                    # (relocal synth) have depth aligned to colour already
        self.with_ground_truth = with_ground_truth
        self.items = []  # (stamp, colour path)
        for seq in seq_dirs:
            m = _SEQ.search(seq.name)
            seq_no = int(m.group(1)) if m else 0
            for f in sorted(seq.glob("frame-*.color.*")):
                fm = _FRAME.search(f.name)
                if fm:
                    self.items.append((str(seq_no * SEQUENCE_STRIDE + int(fm.group(1))), f))
        calib = _scene_file(path, "calibration.yaml")
        if calib is not None:
            self.intrinsics, scale = load_calibration_yaml(calib)
            self.depth_scale = scale or SEVEN_SCENES_DEPTH_SCALE
            self.pose_sigma = _pose_sigma(calib)
            self.register_depth = False
        elif (matrix := _scene_file(path, CAMERA_MATRIX_FILE)) is not None:
            # the 3DMatch layout (its SUN3D, BundleFusion, ... scenes): millimetre depth already registered to the
            # colour image, one camera matrix for both. 3DMatch's copies of 7-Scenes scenes carry the Kinect depth
            # camera's matrix (585 px) instead: their colour is the 7-Scenes colour camera's, read as above.
            K = load_intrinsics_matrix(matrix, *first_image_size([f for _, f in self.items[:5]], self.intrinsics))
            if not np.allclose(K.K, SEVEN_SCENES_DEPTH_INTRINSICS.K):
                self.intrinsics, self.register_depth = K, False

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> RGBDFrame:
        stamp, colour = self.items[i]
        bgr = cv2.imread(str(colour), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{colour}: missing or unreadable image")
        check_colour_size(bgr, self.intrinsics, str(colour))
        base = str(colour).rsplit(".color.", 1)[0]
        depth = None
        raw = cv2.imread(base + ".depth.png", cv2.IMREAD_UNCHANGED)
        if raw is not None:
            # the depth camera's own resolution when it is registered here, the colour image's when it already is
            size = (SEVEN_SCENES_DEPTH_INTRINSICS.width, SEVEN_SCENES_DEPTH_INTRINSICS.height) \
                if self.register_depth else (bgr.shape[1], bgr.shape[0])
            depth = depth_in_metres(raw, size, self.depth_scale, base + ".depth.png")
            depth[raw == 65535] = 0.0  # 7-Scenes marks invalid depth with 65535 as well as 0
            if self.register_depth:
                depth = register_depth(depth, SEVEN_SCENES_DEPTH_INTRINSICS, self.intrinsics,
                                       SEVEN_SCENES_T_COLOUR_DEPTH)
        pose = None
        if self.with_ground_truth and Path(base + ".pose.txt").is_file():
            pose = read_pose_file(Path(base + ".pose.txt"))
        return RGBDFrame(stamp, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth, self.intrinsics, pose,
                         str(Path(colour).relative_to(Path(colour).parent.parent)))
