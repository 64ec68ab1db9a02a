"""Small units checked against values worked out by hand (kornia-style): retrieval's diversity rule, mutual
nearest neighbours with the ratio test, configuration merging, keyframe selection."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from relocal_ros.mapping.builder import default_build_conf
from relocal_ros.mapping.keyframe_map import KeyframeSelector
from relocal_ros.matching.features import mutual_nearest_neighbours
from relocal_ros.pipeline import default_conf, merge_conf
from relocal_ros.retrieval.index import select_diverse


def test_select_diverse_by_hand():
    centres = np.array([[0, 0, 0], [0.01, 0, 0], [1, 0, 0], [20, 0, 0], [2, 0, 0]], float)
    # 1 is 1 cm from 0 (a near-duplicate), 3 is 20 m from the first choice (a far look-alike): both skipped
    assert select_diverse(np.array([0, 1, 2, 3, 4]), centres, 3, 0.05, 10.0) == [0, 2, 4]
    assert select_diverse(np.array([0, 1, 2, 3, 4]), centres, 2, 0.05, 10.0) == [0, 2]
    assert select_diverse(np.array([3, 0]), centres, 2, 0.05, 10.0) == [3]       # 0 is 20 m from the first
    assert select_diverse(np.array([0, 1]), centres, 2, 0.0, 10.0) == [0, 1]    # no minimum distance
    assert select_diverse(np.array([], int), centres, 3) == []


def test_mutual_nearest_neighbours_and_ratio_test_by_hand():
    s = np.sqrt(0.5)
    q = np.array([[1, 0], [0, 1], [s, s]], float)
    r = np.array([[1, 0], [0.6, 0.8], [-1, 0], [0.8, 0.6]], float)
    # similarities: q0: r0 1.0, r3 0.8 | q1: r1 0.8, r3 0.6 | q2: r1 = r3 = 0.990, r0 0.707
    # q0 <-> r0 mutual; q1's best is r1 but r1's best is q2 (0.990): not mutual; q2 <-> r1 or r3 (a tie) mutual
    m = mutual_nearest_neighbours(q, r, min_similarity=0.0).tolist()
    assert len(m) == 2 and m[0] == [0, 0] and m[1][0] == 2 and m[1][1] in (1, 3)
    assert mutual_nearest_neighbours(q, r, min_similarity=0.995).tolist() == [[0, 0]]
    # ratio test on descriptor distances d = sqrt(2 - 2 sim): q0 0 / 0.632 passes; q2's two best are equally
    # far (ratio 1): ambiguous, removed
    assert mutual_nearest_neighbours(q, r, 0.0, max_ratio=0.8).tolist() == [[0, 0]]
    assert mutual_nearest_neighbours(np.zeros((0, 2)), r).shape == (0, 2)
    # two query descriptors equally near one keyframe descriptor: one-to-one, the first keeps it
    assert mutual_nearest_neighbours(np.array([[1, 0], [1, 0], [0, 1]], float), np.array([[1, 0], [0, 1]], float),
                                     0.0).tolist() == [[0, 0], [2, 1]]


def test_merge_conf_coerces_to_the_default_type_and_refuses_unknown_keys():
    base = default_conf()
    out = merge_conf(base, {"inference": {"num_references": "5", "use_depth": 0, "guided_radius": 8},
                            "solver": {"min_inliers": 12.7}})
    assert out["inference"]["num_references"] == 5 and isinstance(out["inference"]["num_references"], int)
    assert out["inference"]["use_depth"] is False
    assert out["inference"]["guided_radius"] == 8.0 and isinstance(out["inference"]["guided_radius"], float)
    assert out["solver"]["min_inliers"] == 12                  # int() truncates, as the type says
    assert base["inference"]["num_references"] == 3            # the base is not modified
    with pytest.raises(KeyError, match="guided_radiu"):
        merge_conf(base, {"inference": {"guided_radiu": 8}})
    with pytest.raises(ValueError):
        merge_conf(base, {"solver": {"min_inliers": "many"}})


def _pose(x, yaw_deg):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    T[0, 3] = x
    return T


def test_keyframe_selector_by_hand_and_defaults_agree_with_the_builder():
    sel = KeyframeSelector(0.10, 10.0)
    assert sel.should_add(_pose(0, 0))
    assert not sel.should_add(_pose(0.05, 5))      # 5 cm and 5 deg from the first: neither enough
    assert sel.should_add(_pose(0.05, 11))         # turned 11 deg: a new view
    assert sel.should_add(_pose(0.11, 0))          # moved 11 cm
    assert not sel.should_add(_pose(0.06, 10.5))   # 1 cm / 0.5 deg from the second, whatever the first says
    default = KeyframeSelector()
    assert default.min_translation == default_build_conf()["min_translation"]
    assert default.min_rotation_deg == default_build_conf()["min_rotation_deg"]


def test_guided_matching_keeps_the_window_similarity_margin_and_one_to_one_rules():
    """Each map point projected with the pose takes the most similar query keypoint inside its window, when that
    similarity is high enough and beats the window's runner-up by the margin; a query keypoint keeps its most
    similar map point only; points outside every window, behind the camera or without 3D are never matched."""
    from relocal_ros.geometry.camera import Intrinsics
    from relocal_ros.matching.guided import guided_matches

    intr = Intrinsics(500.0, 500.0, 320.0, 240.0, 640, 480)
    unit = np.eye(8, dtype=np.float32)
    q_uv = np.array([[100, 100], [104, 100], [300, 200], [500, 400], [50, 400]], float)
    q_desc = unit[[0, 1, 2, 3, 4]]
    # map points at 2 m whose projections fall at: 2 px from query 0 (descriptor of 0), 2 px from query 1 with
    # a descriptor between 0 and 1 (runner-up too close), on query 2 twice (the more similar wins), 40 px from
    # query 3 (outside the window), behind the camera, and NaN
    def at(u, v, z=2.0):
        return [(u - 320) / 500 * z, (v - 240) / 500 * z, z]
    X = np.array([at(102, 100), at(106, 101), at(300, 201), at(301, 200), at(540, 400), at(50, 400, -2.0),
                  [np.nan] * 3])
    d_mid = (unit[0] + unit[1]) / np.sqrt(2)
    m_desc = np.stack([unit[0], d_mid, 0.9 * unit[2] + 0.1 * unit[5], unit[2], unit[3], unit[4], unit[4]])
    m_desc /= np.linalg.norm(m_desc, axis=1, keepdims=True)
    m, sim = guided_matches(np.eye(4), q_uv, q_desc, intr, X, m_desc, radius_px=12.0, min_similarity=0.5,
                            margin=0.05)
    assert sorted(map(tuple, m.tolist())) == [(0, 0), (2, 3)]
    assert np.allclose(sim[np.argsort(m[:, 0])], [1.0, 1.0])
    # without the margin the in-between descriptor takes query 0 or 1 (equally similar to both: the nearer one)
    m, _ = guided_matches(np.eye(4), q_uv, q_desc, intr, X, m_desc, radius_px=12.0, min_similarity=0.5,
                          margin=0.0)
    assert (1, 1) in set(map(tuple, m.tolist()))
    # a window too small for any projection: nothing
    m, sim = guided_matches(np.eye(4), q_uv + 30.0, q_desc, intr, X, m_desc, radius_px=3.0)
    assert m.shape == (0, 2) and sim.shape == (0,)
