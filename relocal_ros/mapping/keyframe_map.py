"""The keyframe map: keyframe poses, intrinsics, local features lifted to 3D with their depth, global descriptors
and their FAISS index, small image/depth thumbnails for the learned methods.

On disk a map is a directory of immutable versions plus a pointer file, so a crash at any moment of a save leaves
either the previous map or the new one, never a mix:

    MAP/CURRENT          one line: the name of the live version ("v000003"); replaced atomically (os.replace)
    MAP/v000003/manifest.json   format, version, configuration, keyframe metadata, sha256 of every other file
    MAP/v000003/arrays.npz      numeric arrays (loaded with allow_pickle=False)
    MAP/v000003/index.faiss     FAISS index of the global descriptors

Loading verifies every checksum before parsing anything, so a truncated or tampered file is refused with a
clear MapFormatError and the map in memory (if any) stays as it was."""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import faiss
import numpy as np

from relocal_ros.data.frames import RGBDFrame
from relocal_ros.geometry.camera import Intrinsics, lift_pixels
from relocal_ros.geometry.poses import is_rigid
from relocal_ros.io_utils import atomic_write_bytes, file_sha256
from relocal_ros.matching.features import DEFAULT_CONFS, LocalFeatures
from relocal_ros.retrieval.index import KeyframeIndex

MAP_FORMAT = "relocal_ros.keyframe_map"
MAP_FORMAT_VERSION = 1
THUMB_SIZE = (160, 120)  # width, height of stored keyframe thumbnails


class MapFormatError(ValueError):
    pass


@dataclass
class Keyframe:
    id: int
    stamp: str
    T_map_cam: np.ndarray
    intrinsics: Intrinsics
    features: LocalFeatures
    points3d: np.ndarray        # N x 3 map frame, NaN where the keypoint has no reliable depth
    feature_rotation: np.ndarray  # N int8: index into the map's rotations of the image each feature came from
    global_descriptors: np.ndarray  # R x D: one per stored in-plane rotation
    thumbnail: np.ndarray       # h x w x 3 uint8
    depth_thumbnail: np.ndarray  # h x w float16 metres (0 = none)

    @property
    def centre(self) -> np.ndarray:
        return self.T_map_cam[:3, 3]

    def rotation_subset(self, r: int) -> np.ndarray:
        """Indices of the features extracted from this keyframe turned by the map's r-th rotation."""
        return np.flatnonzero(self.feature_rotation == r)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate_image(rgb: np.ndarray, angle_deg: float) -> np.ndarray:
    """The image turned in-plane about its centre, same size (corners cut): what a global descriptor sees."""
    if angle_deg == 0:
        return rgb
    h, w = rgb.shape[:2]
    A = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    return cv2.warpAffine(rgb, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def lift_keypoints(features: LocalFeatures, depth: np.ndarray | None, intr: Intrinsics, T_map_cam: np.ndarray) -> np.ndarray:
    """Map-frame 3D points of keypoints from the aligned depth image (NaN where depth is missing or unreliable)."""
    return lift_pixels(depth, intr, features.keypoints, T_map_cam)


class KeyframeMap:
    def __init__(self, vocabulary: np.ndarray, extractor: str = "xfeat", extractor_conf: dict | None = None,
                 metadata: dict | None = None, rotations=(0.0,), global_descriptor: str = "xfeat_vlad",
                 global_conf: dict | None = None):
        """global_descriptor: the retrieval descriptor of keyframes and queries — "xfeat_vlad" (VLAD over the
        local features with `vocabulary`, the default: it costs nothing beyond the features) or an image
        descriptor of retrieval/global_descriptors.py ("netvlad", "densevlad", "raw_pixels")."""
        self.vocabulary = np.asarray(vocabulary, np.float32)
        self.global_descriptor = global_descriptor
        self.global_conf = dict(global_conf or {})
        self._global = None
        if global_descriptor != "xfeat_vlad":
            from relocal_ros.retrieval.global_descriptors import make_global_descriptor
            self._global = make_global_descriptor(global_descriptor, self.global_conf)
        self.rotations = tuple(float(r) for r in rotations)
        self.extractor = extractor
        self.extractor_conf = {**DEFAULT_CONFS.get(extractor, {}), **(extractor_conf or {})}
        self.metadata = dict(metadata or {})
        self.keyframes: list[Keyframe] = []
        self.index = KeyframeIndex(self._global.dim if self._global is not None
                                   else self.vocabulary.shape[0] * self.vocabulary.shape[1])
        self._encoder = None
        self.version = ""  # name of the on-disk version this map was loaded from or last saved as
        self.path: Path | None = None  # the map directory (per-map trained models live beside the versions)

    # -- building -------------------------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            from relocal_ros.retrieval.encoder import FrameEncoder
            self._encoder = FrameEncoder(self.extractor, self.extractor_conf, self.vocabulary, self._global)
        return self._encoder

    @property
    def intrinsics(self) -> Intrinsics | None:
        return self.keyframes[0].intrinsics if self.keyframes else None

    def __len__(self) -> int:
        return len(self.keyframes)

    def encode_keyframe(self, rgb: np.ndarray) -> tuple[list[LocalFeatures], np.ndarray]:
        """Local features at every stored rotation (keypoints in the image's own frame) and one global
        descriptor per rotation."""
        per_rotation = [self.encoder.extractor.extract_rotated(rgb, a) for a in self.rotations]
        return per_rotation, self.global_descriptors(rgb, per_rotation)

    def global_descriptors(self, rgb: np.ndarray, per_rotation: list[LocalFeatures]) -> np.ndarray:
        """One retrieval descriptor per stored rotation (a rolled query then finds the keyframe's matching turn)."""
        if self._global is None:
            return np.stack([self.encoder.vlad(f.descriptors) for f in per_rotation])
        return np.stack([self._global(rotate_image(rgb, a)) for a in self.rotations])

    def add_keyframe(self, frame: RGBDFrame) -> int:
        """Encode once (features, 3D points, global descriptors) and index; returns the keyframe id."""
        if frame.pose is None or not is_rigid(frame.pose):
            raise ValueError(f"keyframe {frame.stamp}: needs a valid camera-to-map pose")
        return self._append(frame, *self.encode_keyframe(frame.rgb))

    def _append(self, frame: RGBDFrame, per_rotation: list[LocalFeatures], gdescs: np.ndarray) -> int:
        gdescs = np.atleast_2d(gdescs)
        features = LocalFeatures.concatenate(per_rotation)
        rotation = np.concatenate([np.full(len(f), r, np.int8) for r, f in enumerate(per_rotation)])
        pts = lift_keypoints(features, frame.depth, frame.intrinsics, frame.pose)
        thumb = cv2.resize(frame.rgb, THUMB_SIZE, interpolation=cv2.INTER_AREA)
        if frame.depth is not None:
            dthumb = cv2.resize(np.nan_to_num(frame.depth, nan=0.0, posinf=0.0), THUMB_SIZE,
                                interpolation=cv2.INTER_NEAREST).astype(np.float16)
        else:
            dthumb = np.zeros(THUMB_SIZE[::-1], np.float16)
        kf = Keyframe(len(self.keyframes), frame.stamp, np.asarray(frame.pose, float), frame.intrinsics, features,
                      pts, rotation, gdescs, thumb, dthumb)
        self.keyframes.append(kf)
        self.index.add(gdescs, kf.id)
        return kf.id

    def centres(self) -> np.ndarray:
        return np.array([kf.centre for kf in self.keyframes]).reshape(-1, 3)

    def viewpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """(centres, unit optical axes in the map frame), N x 3 each: where each keyframe stood and looked."""
        axes = np.array([kf.T_map_cam[:3, 2] for kf in self.keyframes]).reshape(-1, 3)
        return self.centres(), axes / np.maximum(np.linalg.norm(axes, axis=1, keepdims=True), 1e-12)

    # -- persistence ----------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write a new version atomically; returns its directory."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        current = _read_current(root, missing_ok=True)
        number = int(current[1:]) + 1 if current else 1
        while (root / f"v{number:06d}").exists():
            number += 1
        name = f"v{number:06d}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            self._write_version(tmp)
            final = root / name
            os.rename(tmp, final)
            _fsync_dir(root)
            atomic_write_bytes(root / "CURRENT", (name + "\n").encode())  # the commit point
            _fsync_dir(root)
            self.version, self.path = name, root
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in root.iterdir():  # older versions and leftovers of interrupted saves
            if old.name not in (name, "CURRENT") and (old.name.startswith("v") or old.name.startswith(".v")):
                shutil.rmtree(old, ignore_errors=True)
            elif old.name.startswith(".CURRENT.") and old.name.endswith(".tmp"):
                old.unlink(missing_ok=True)
        return final

    def _write_version(self, d: Path) -> None:
        kfs = self.keyframes
        counts = np.array([len(kf.features) for kf in kfs], np.int64)
        dim = kfs[0].features.descriptors.shape[1] if kfs else 0
        arrays = {
            "vocabulary": self.vocabulary,
            "poses": np.array([kf.T_map_cam for kf in kfs], np.float64).reshape(-1, 4, 4),
            "feature_counts": counts,
            "keypoints": np.concatenate([kf.features.keypoints for kf in kfs]) if kfs else np.zeros((0, 2), np.float32),
            "descriptors": (np.concatenate([kf.features.descriptors for kf in kfs]) if kfs
                            else np.zeros((0, dim), np.float32)).astype(np.float16),
            "scores": np.concatenate([kf.features.scores for kf in kfs]) if kfs else np.zeros(0, np.float32),
            "points3d": np.concatenate([kf.points3d for kf in kfs]) if kfs else np.zeros((0, 3), np.float32),
            "feature_rotations": (np.concatenate([kf.feature_rotation for kf in kfs]) if kfs
                                  else np.zeros(0, np.int8)),
            "global_descriptors": np.array([kf.global_descriptors for kf in kfs], np.float32).reshape(
                len(kfs), len(self.rotations), -1),
            "index_owners": self.index.owners,
            "thumbnails": np.array([kf.thumbnail for kf in kfs], np.uint8).reshape(len(kfs), THUMB_SIZE[1], THUMB_SIZE[0], 3),
            "depth_thumbnails": np.array([kf.depth_thumbnail for kf in kfs], np.float16).reshape(len(kfs), THUMB_SIZE[1], THUMB_SIZE[0]),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        _write_synced(d / "arrays.npz", buf.getvalue())
        _write_synced(d / "index.faiss", faiss.serialize_index(self.index.index).tobytes())
        manifest = {
            "format": MAP_FORMAT,
            "format_version": MAP_FORMAT_VERSION,
            "created_unix": time.time(),
            "extractor": self.extractor,
            "extractor_conf": self.extractor_conf,
            "rotations": list(self.rotations),
            "global_descriptor": self.global_descriptor,
            "global_conf": self.global_conf,
            "metadata": self.metadata,
            "keyframes": [{"id": kf.id, "stamp": kf.stamp, "intrinsics": kf.intrinsics.to_dict()} for kf in kfs],
            "checksums": {name: file_sha256(d / name) for name in ("arrays.npz", "index.faiss")},
        }
        _write_synced(d / "manifest.json", json.dumps(manifest, indent=1).encode())

    @classmethod
    def load(cls, path) -> "KeyframeMap":
        root = Path(path)
        if not root.is_dir():
            raise MapFormatError(f"{root}: no map directory there")
        version = root / _read_current(root)
        try:
            manifest = json.loads((version / "manifest.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MapFormatError(f"{version}/manifest.json: unreadable ({e})") from e
        if not isinstance(manifest, dict) or manifest.get("format") != MAP_FORMAT:
            raise MapFormatError(f"{version}: not a relocal_ros keyframe map")
        if manifest.get("format_version") != MAP_FORMAT_VERSION:
            raise MapFormatError(f"{version}: map format version {manifest.get('format_version')} is not supported "
                                 f"by this relocal_ros (expects {MAP_FORMAT_VERSION}); rebuild the map")
        for name, digest in manifest.get("checksums", {}).items():
            f = version / name
            if not f.is_file():
                raise MapFormatError(f"{f}: missing")
            if file_sha256(f) != digest:
                raise MapFormatError(f"{f}: checksum mismatch (truncated or modified); the map is not loaded")
        if set(manifest.get("checksums", {})) != {"arrays.npz", "index.faiss"}:
            raise MapFormatError(f"{version}: manifest lacks checksums for its files")
        try:
            with np.load(version / "arrays.npz", allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            m = cls(a["vocabulary"], manifest["extractor"], manifest["extractor_conf"], manifest.get("metadata"),
                    manifest["rotations"], manifest.get("global_descriptor", "xfeat_vlad"),
                    manifest.get("global_conf"))
            offsets = np.concatenate([[0], np.cumsum(a["feature_counts"])])
            for i, meta in enumerate(manifest["keyframes"]):
                s = slice(offsets[i], offsets[i + 1])
                feats = LocalFeatures(a["keypoints"][s], a["descriptors"][s].astype(np.float32), a["scores"][s])
                m.keyframes.append(Keyframe(int(meta["id"]), str(meta["stamp"]), a["poses"][i],
                                            Intrinsics.from_dict(meta["intrinsics"]), feats, a["points3d"][s],
                                            a["feature_rotations"][s],
                                            a["global_descriptors"][i], a["thumbnails"][i], a["depth_thumbnails"][i]))
            index = faiss.deserialize_index(np.fromfile(version / "index.faiss", dtype=np.uint8))
        except MapFormatError:
            raise
        except Exception as e:  # a consistent checksum over inconsistent content: a bug or a crafted file
            raise MapFormatError(f"{version}: inconsistent map content ({type(e).__name__}: {e})") from e
        if index.ntotal != len(m.keyframes) * len(m.rotations) or index.d != m.index.dim:
            raise MapFormatError(f"{version}: index holds {index.ntotal} x {index.d}, map has "
                                 f"{len(m.keyframes)} keyframes x {len(m.rotations)} rotations x {m.index.dim}")
        if len(a["index_owners"]) != index.ntotal:
            raise MapFormatError(f"{version}: index owners do not match the index")
        m.index.index, m.index.owners = index, a["index_owners"]
        m.version, m.path = version.name, root
        return m


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_current(root: Path, missing_ok: bool = False) -> str | None:
    ptr = root / "CURRENT"
    if not ptr.is_file():
        if missing_ok:
            return None
        raise MapFormatError(f"{root}: not a map (no CURRENT file)")
    name = ptr.read_text().strip()
    if not (name.startswith("v") and name[1:].isdigit() and (root / name).is_dir()):
        raise MapFormatError(f"{root}/CURRENT names {name!r}, which is not a complete map version")
    return name


class KeyframeSelector:
    """Accepts a new keyframe when the camera has moved or turned enough since every kept one."""

    def __init__(self, min_translation: float | None = None, min_rotation_deg: float | None = None):
        from relocal_ros.settings import setting  # defaults: the map builder's (one schema)
        self.min_translation = setting("min_translation").default if min_translation is None else min_translation
        self.min_rotation_deg = setting("min_rotation_deg").default if min_rotation_deg is None \
            else min_rotation_deg
        self.poses: list[np.ndarray] = []

    def should_add(self, T_world_cam: np.ndarray) -> bool:
        for T in self.poses:
            dt = np.linalg.norm(T[:3, 3] - T_world_cam[:3, 3])
            cos = np.clip((np.trace(T[:3, :3].T @ T_world_cam[:3, :3]) - 1) / 2, -1, 1)
            if dt < self.min_translation and np.degrees(np.arccos(cos)) < self.min_rotation_deg:
                return False
        self.poses.append(np.asarray(T_world_cam, float))
        return True


def version_fingerprint(path) -> tuple[str, dict[str, str]]:
    """(current version name, {file: sha256}) of a map directory: what a crash must leave bit-identical."""
    root = Path(path)
    name = _read_current(root)
    return name, {f.name: file_sha256(f) for f in sorted((root / name).iterdir()) if f.is_file()}


def check_after_interrupted_save(path, before: tuple[str, dict[str, str]]) -> str:
    """After a save was interrupted at an arbitrary point (kill -9, power loss): 'previous' when the map still is
    the previous version, bit for bit; 'new' when it is a new version that loads completely (checksums verified).
    Raises MapFormatError for anything else: a mix of the two, or no loadable map."""
    kmap = KeyframeMap.load(path)
    name, files = version_fingerprint(path)
    if name == before[0]:
        if files != before[1]:
            raise MapFormatError(f"{path}: version {name} changed in place: {sorted(set(files.items()) ^ set(before[1].items()))}")
        return "previous"
    if kmap.version != name:
        raise MapFormatError(f"{path}: loaded {kmap.version} but CURRENT names {name}")
    return "new"
