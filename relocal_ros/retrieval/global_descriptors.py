"""One place that turns a global-descriptor name into a callable rgb -> float32 L2-normalised vector with `name` and
`dim`: "densevlad" (dense RootSIFT VLAD + PCA-whitening, models/densevlad_sift_k64.npz), "raw_pixels" (thumbnail
baseline) and "netvlad" (learned, relocal_ros.retrieval.netvlad, imported only when asked for: it needs torch)."""
from __future__ import annotations

KNOWN = ("densevlad", "raw_pixels", "netvlad")


def make_global_descriptor(name: str, conf: dict | None = None):
    """conf: densevlad {"model": path to a .npz (default: the shipped one)}; raw_pixels {"width", "height"};
    netvlad: the keyword arguments of NetVladDescriptor (e.g. weights, backend, threads)."""
    conf = dict(conf or {})
    if name == "densevlad":
        from relocal_ros.retrieval.densevlad import DenseVladDescriptor
        return DenseVladDescriptor.load(conf.pop("model", None))
    if name == "raw_pixels":
        from relocal_ros.retrieval.raw_pixels import RawPixelDescriptor
        return RawPixelDescriptor(**conf)
    if name == "netvlad":
        try:
            from relocal_ros.retrieval.netvlad import NetVladDescriptor
        except ImportError as e:
            raise RuntimeError(f"global descriptor 'netvlad' is not available: relocal_ros.retrieval.netvlad could "
                               f"not be imported ({type(e).__name__}: {e})") from e
        return NetVladDescriptor(**conf)
    raise ValueError(f"unknown global descriptor {name!r}; known: {', '.join(KNOWN)}")
