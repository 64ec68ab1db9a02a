"""DenseVLAD global image descriptor (Torii, Arandjelović, Sivic, Okutomi, Pajdla, "24/7 place recognition by view
synthesis", CVPR 2015): no learned features, only

    grey image (resized to 320 x 240) -> upright SIFT computed densely on a regular grid at several bin sizes
    (OpenCV's SIFT descriptor on given keypoints; flat, texture-less patches dropped) -> RootSIFT (L1, sqrt)
    -> VLAD over a k-word vocabulary (FAISS spherical k-means; power- and intra-normalised, L2; vlad.VladAggregator)
    -> PCA-whitening (faiss.PCAMatrix, eigen_power = -0.5, learned on training images) -> L2.

The model (vocabulary, PCA projection and bias) is one .npz file read with np.load(allow_pickle=False); the shipped one,
models/densevlad_sift_k64.npz, is learned from synthetic scenes only by scripts/train_densevlad_vocabulary.py.
The projection is stored as float16 to keep the file small; the in-memory model always uses the float16-rounded
values, so a freshly trained model and its saved/loaded copy give identical descriptors."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import faiss
import numpy as np

from relocal_ros.retrieval.vlad import VladAggregator, learn_vocabulary

from relocal_ros.resources import models_dir  # noqa: E402  (source tree, installed share/ or ament index)
MODELS_DIR = models_dir()
DEFAULT_MODEL = MODELS_DIR / "densevlad_sift_k64.npz"
FORMAT_VERSION = 1
# SIFT spatial bin sizes in pixels of the working image (Torii et al. use 4/6/8/10 px at VGA with a 2 px stride; the
# working size here is half VGA). OpenCV's SIFT descriptor costs time in proportion to its patch area (~40 us for a
# 10 px bin on one core), so the grid step grows with the bin: step = max(stride, stride_per_bin * bin), i.e. 6/9/12/15
# px, neighbouring patches overlapping by more than half at every size; ~3900 descriptors, ~0.1 s per image.
DEFAULT_CONF = {"width": 320, "height": 240, "bin_sizes": (4, 6, 8, 10), "stride": 4, "stride_per_bin": 1.5,
                "min_contrast": 2.0}
SIFT_DIM = 128
# OpenCV's SIFT descriptor spans 4 x 4 bins of width 3 * size / 2 (SIFT_DESCR_SCL_FCTR * keypoint radius).
_BIN_PER_SIZE = 1.5


def _grey(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or rgb.size == 0:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {getattr(rgb, 'dtype', type(rgb))} "
                         f"{getattr(rgb, 'shape', '')}")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    if (w, h) != (width, height):
        shrink = w >= width and h >= height
        grey = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return grey


class DenseSift:
    """Dense upright RootSIFT on a regular grid, several bin sizes. Keypoints whose patch has a mean gradient
    magnitude below `min_contrast` grey levels per pixel are dropped: SIFT normalises every descriptor to unit length,
    so on a flat wall it would turn sensor noise into full-strength descriptors."""

    def __init__(self, conf: dict | None = None):
        self.conf = {**DEFAULT_CONF, **(conf or {})}
        self.width, self.height = int(self.conf["width"]), int(self.conf["height"])
        self.sift = cv2.SIFT_create()
        self._grids = []
        for b in self.conf["bin_sizes"]:
            margin = int(np.ceil(2 * b))  # the 4 x 4 bin patch around the centre stays inside the image
            s = max(int(self.conf["stride"]), int(round(float(self.conf["stride_per_bin"]) * b)))
            ys, xs = np.mgrid[margin:self.height - margin + 1:s, margin:self.width - margin + 1:s]
            pts = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float32)
            self._grids.append((float(b), pts))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        grey = _grey(rgb, self.width, self.height)
        g = grey.astype(np.float32)
        mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
        kps = []
        for b, pts in self._grids:
            k = int(4 * b) | 1
            local = cv2.boxFilter(mag, -1, (k, k), borderType=cv2.BORDER_REFLECT)
            keep = pts[local[pts[:, 1].astype(int), pts[:, 0].astype(int)] >= self.conf["min_contrast"]]
            size = b / _BIN_PER_SIZE
            kps += [cv2.KeyPoint(float(x), float(y), size, 0.0) for x, y in keep]
        if not kps:
            return np.zeros((0, SIFT_DIM), np.float32)
        _, d = self.sift.compute(grey, kps)  # one call: OpenCV builds the scale space once for all bin sizes
        if d is None or not len(d):
            return np.zeros((0, SIFT_DIM), np.float32)
        d = d.astype(np.float32)
        d /= np.maximum(d.sum(1, keepdims=True), 1e-12)  # RootSIFT (Arandjelović & Zisserman 2012)
        return np.sqrt(d)


class DenseVladDescriptor:
    """Callable rgb (H x W x 3 uint8) -> float32 L2-normalised 1-D descriptor of length `dim`."""
    name = "densevlad"

    def __init__(self, vocabulary: np.ndarray, pca_A: np.ndarray | None = None, pca_b: np.ndarray | None = None,
                 conf: dict | None = None):
        self.conf = {**DEFAULT_CONF, **(conf or {})}
        self.vocabulary = np.ascontiguousarray(vocabulary, np.float32)
        if self.vocabulary.ndim != 2 or self.vocabulary.shape[1] != SIFT_DIM or len(self.vocabulary) < 1:
            raise ValueError(f"DenseVLAD vocabulary must be K x {SIFT_DIM}, got {self.vocabulary.shape}")
        self.dense = DenseSift(self.conf)
        self.vlad = VladAggregator(self.vocabulary)
        if (pca_A is None) != (pca_b is None):
            raise ValueError("give both the PCA projection and its bias, or neither")
        if pca_A is not None:
            pca_A = np.asarray(pca_A, np.float32)
            pca_b = np.asarray(pca_b, np.float32).reshape(-1)
            if pca_A.ndim != 2 or pca_A.shape[1] != self.vlad.output_dim or pca_b.shape != (pca_A.shape[0],):
                raise ValueError(f"PCA projection {pca_A.shape} / bias {pca_b.shape} do not fit VLAD dimension "
                                 f"{self.vlad.output_dim}")
            # the model holds exactly what its file holds (float16 projection), see the module docstring
            pca_A = pca_A.astype(np.float16).astype(np.float32)
        self.pca_A, self.pca_b = pca_A, pca_b

    @property
    def dim(self) -> int:
        return self.vlad.output_dim if self.pca_A is None else int(self.pca_A.shape[0])

    def vlad_vector(self, rgb: np.ndarray) -> np.ndarray:
        """The normalised VLAD before PCA-whitening (k * 128 dims)."""
        return self.vlad(self.dense(rgb))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.project(self.vlad_vector(rgb))

    def project(self, v: np.ndarray) -> np.ndarray:
        """VLAD vector -> final descriptor (PCA-whitened and L2-normalised when the model has a PCA)."""
        if self.pca_A is None:
            return v
        y = self.pca_A @ v + self.pca_b
        n = float(np.linalg.norm(y))
        return (y / n if n > 0 else y).astype(np.float32)

    # ------------------------------------------------------------------ training / persistence
    @classmethod
    def train(cls, images: Iterable[np.ndarray], n_words: int = 64, pca_dim: int | None = 128,
              conf: dict | None = None, seed: int = 0, max_local: int = 200_000, progress: bool = False
              ) -> "DenseVladDescriptor":
        """Learn the vocabulary (FAISS spherical k-means on RootSIFT sampled from all images) and the PCA-whitening
        (faiss.PCAMatrix, eigen_power -0.5) of the images' VLAD vectors. `images` is iterated twice, so pass a
        sequence (list), not a generator. pca_dim None: no PCA (the raw VLAD, k * 128 dims)."""
        images = list(images)
        if not images:
            raise ValueError("DenseVLAD training needs at least one image")
        dense = DenseSift(conf)
        rng = np.random.default_rng(seed)
        per_image = max(1, max_local // len(images))
        local, samples, it = [], [], images
        if progress:
            from tqdm import tqdm
            it = tqdm(images, desc="dense SIFT", unit="img")
        for img in it:
            d = dense(img)
            local.append(d.astype(np.float16))  # kept for the VLAD pass (half the memory; RootSIFT is in [0, 1])
            samples.append(d[rng.choice(len(d), per_image, replace=False)] if len(d) > per_image else d)
        vocabulary = learn_vocabulary(np.concatenate(samples), n_words, seed=seed, max_points=max_local)
        model = cls(vocabulary, conf=conf)
        if pca_dim is None:
            return model
        if pca_dim > len(images) - 1:
            raise ValueError(f"PCA to {pca_dim} dims needs more than {pca_dim} training images, got {len(images)}")
        X = np.stack([model.vlad(d.astype(np.float32)) for d in local]).astype(np.float32)
        del local
        pca = faiss.PCAMatrix(X.shape[1], int(pca_dim), -0.5, False)
        pca.train(np.ascontiguousarray(X))
        A = faiss.vector_to_array(pca.A).reshape(int(pca_dim), X.shape[1])
        b = faiss.vector_to_array(pca.b)
        return cls(vocabulary, A, b, conf=conf)

    def save(self, path) -> None:
        arrays = {"format_version": np.array(FORMAT_VERSION, np.int64),
                  "vocabulary": self.vocabulary,
                  "bin_sizes": np.asarray(self.conf["bin_sizes"], np.float32),
                  "work_size": np.array([self.conf["width"], self.conf["height"]], np.int64),
                  "stride": np.array(self.conf["stride"], np.int64),
                  "stride_per_bin": np.array(self.conf["stride_per_bin"], np.float32),
                  "min_contrast": np.array(self.conf["min_contrast"], np.float32)}
        if self.pca_A is not None:
            arrays["pca_A"] = self.pca_A.astype(np.float16)
            arrays["pca_b"] = self.pca_b.astype(np.float32)
        path = Path(path)
        with open(path, "wb") as f:  # np.savez_compressed(str) would append ".npz" to any other suffix
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path=None) -> "DenseVladDescriptor":
        path = Path(path) if path is not None else DEFAULT_MODEL
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no DenseVLAD model file (make one with "
                                    f"scripts/train_densevlad_vocabulary.py)")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as e:  # zip/npy errors of every kind: truncated, not a zip, object arrays
            raise ValueError(f"{path}: not a readable DenseVLAD model .npz ({type(e).__name__}: {e})") from e
        missing = [k for k in ("format_version", "vocabulary", "bin_sizes", "work_size", "stride", "stride_per_bin",
                               "min_contrast")
                   if k not in data]
        if missing:
            raise ValueError(f"{path}: not a DenseVLAD model: missing arrays {missing}")
        if int(data["format_version"]) != FORMAT_VERSION:
            raise ValueError(f"{path}: DenseVLAD model format {int(data['format_version'])}, "
                             f"this code reads format {FORMAT_VERSION}")
        voc = data["vocabulary"]
        if voc.ndim != 2 or voc.shape[1] != SIFT_DIM or voc.shape[0] < 1 or not np.isfinite(voc).all():
            raise ValueError(f"{path}: DenseVLAD vocabulary must be a finite K x {SIFT_DIM} array, got {voc.shape}")
        ws, bins = data["work_size"], data["bin_sizes"]
        if ws.shape != (2,) or (ws < 32).any() or bins.ndim != 1 or len(bins) < 1 or (bins <= 0).any():
            raise ValueError(f"{path}: bad DenseVLAD settings (work_size {ws.tolist()}, bin_sizes {bins.tolist()})")
        conf = {"width": int(ws[0]), "height": int(ws[1]), "bin_sizes": tuple(float(b) for b in bins),
                "stride": int(data["stride"]), "stride_per_bin": float(data["stride_per_bin"]),
                "min_contrast": float(data["min_contrast"])}
        if conf["stride"] < 1 or not conf["stride_per_bin"] >= 0:
            raise ValueError(f"{path}: bad DenseVLAD grid step (stride {conf['stride']}, "
                             f"stride_per_bin {conf['stride_per_bin']})")
        A, b = data.get("pca_A"), data.get("pca_b")
        if (A is None) != (b is None):
            raise ValueError(f"{path}: DenseVLAD model has only one of pca_A / pca_b")
        if A is not None:
            if A.ndim != 2 or A.shape[1] != voc.shape[0] * SIFT_DIM or b.shape != (A.shape[0],):
                raise ValueError(f"{path}: PCA projection {A.shape} / bias {b.shape} do not fit a vocabulary of "
                                 f"{voc.shape[0]} words (VLAD dimension {voc.shape[0] * SIFT_DIM})")
            if not (np.isfinite(A.astype(np.float32)).all() and np.isfinite(b).all()):
                raise ValueError(f"{path}: PCA projection or bias is not finite")
        return cls(voc, A, b, conf=conf)
