import numpy as np
import pytest

from relocal_ros.data.sources import open_source
from relocal_ros.data.splits import split_tum
from relocal_ros.data.trajectory import PoseTrack, read_tum_trajectory, write_tum_trajectory
from relocal_ros.data.tum import read_file_list
from relocal_ros.geometry.poses import T_from_tq, pose_error


def test_pose_track_interpolates_and_refuses_gaps():
    T0 = T_from_tq([0, 0, 0], [0, 0, 0, 1])
    T1 = T_from_tq([1, 0, 0], [0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)])  # 45 deg about z
    track = PoseTrack(np.array([10.0, 10.01, 11.0]), np.stack([T0, T1, T1]), max_gap=0.05)
    mid = track.at(10.005)
    assert np.allclose(mid[:3, 3], [0.5, 0, 0])
    assert pose_error(mid, T0)[1] == pytest.approx(22.5, abs=1e-6)
    assert track.at(10.5) is None          # bracketing samples 0.99 s apart
    assert track.at(9.0) is None and track.at(12.0) is None
    assert np.allclose(track.at(10.0), T0)


def test_tum_trajectory_round_trip(tmp_path):
    T = T_from_tq([1, 2, 3], [0.1, 0.2, 0.3, 0.9])
    write_tum_trajectory(tmp_path / "t.txt", ["1305031229.528748"], [T])
    stamps, poses = read_tum_trajectory(tmp_path / "t.txt")
    assert stamps == ["1305031229.528748"]
    assert pose_error(poses[0], T)[0] < 1e-6 and pose_error(poses[0], T)[1] < 1e-3


def test_bad_trajectory_line_is_a_clear_error(tmp_path):
    (tmp_path / "t.txt").write_text("1.0 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match="expected 8 fields"):
        read_tum_trajectory(tmp_path / "t.txt")


def test_tum_reader_associates_depth_and_ground_truth(tum_rpy):
    seq = open_source(tum_rpy)
    assert len(seq) == 181
    f = seq[0]
    assert f.stamp == "1305031229.528748"
    assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
    assert f.depth.dtype == np.float32 and 0.5 < np.median(f.depth[f.depth > 0]) < 5
    assert f.intrinsics.fx == pytest.approx(517.306408) and f.intrinsics.has_distortion
    assert f.pose is not None
    # ground truth at the image time lies between the two bracketing 100 Hz samples
    gt_stamps, gt = read_tum_trajectory(tum_rpy / "groundtruth.txt")
    t = np.array([float(s) for s in gt_stamps])
    i = np.searchsorted(t, f.time)
    assert pose_error(f.pose, gt[i])[0] < 0.01
    # frames with no ground truth within the gap limit get no pose (README: 1305031244.861636 is 49 ms away)
    no_gt = [s for s, _ in seq.rgb if s == "1305031244.861636"]
    assert no_gt and seq[[s for s, _ in seq.rgb].index(no_gt[0])].pose is None


def test_split_makes_map_and_query_folders_without_query_ground_truth(tum_rpy, tmp_path):
    m, q = split_tum(tum_rpy, tmp_path / "map", tmp_path / "query", 0.6)
    nm, nq = len(read_file_list(m / "rgb.txt")), len(read_file_list(q / "rgb.txt"))
    assert (nm, nq) == (109, 72)
    assert (m / "groundtruth.txt").is_file() and not (q / "groundtruth.txt").exists()
    qs = open_source(q)
    assert qs[0].pose is None and qs[0].depth is not None
    assert float(qs[0].stamp) > float(open_source(m)[nm - 1].stamp)


def test_sevenscenes_reader(sevenscenes_stairs):
    scene = open_source(sevenscenes_stairs)
    assert len(scene) == 12
    f = scene[4]
    assert f.stamp == "200001" and f.name.endswith("frame-000001.color.jpg")
    assert f.depth.max() < 10 and not np.any(f.depth == 65.535)  # 65535 marks invalid -> 0
    assert f.pose is not None and abs(np.linalg.det(f.pose[:3, :3]) - 1) < 1e-6
    one_seq = open_source(sevenscenes_stairs / "seq-02")
    assert [one_seq[i].stamp for i in range(3)] == ["200000", "200001", "200002"]


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a TUM RGB-D folder"):
        open_source(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "nope")


def test_register_depth_identity_and_shift():
    from relocal_ros.geometry.camera import Intrinsics, register_depth
    K = Intrinsics(500.0, 500.0, 32.0, 24.0, 64, 48)
    d = np.full((48, 64), 2.0, np.float32)
    d[10:20, 10:20] = 1.0
    assert np.array_equal(register_depth(d, K, K), d)
    # 2 cm sideways with f = 500: 10 px at 1 m (the near square, columns 10-19 -> 20-29), 5 px at 2 m
    shifted = register_depth(d, K, K, (0.02, 0.0, 0.0))
    assert np.all(shifted[15, 20:30] == 1.0) and shifted[15, 19] == 0.0  # uncovered strip: no depth, not invented
    assert shifted[15, 35] == 2.0 and np.all(shifted[15, :5] == 0.0)


def test_sevenscenes_depth_is_registered_to_colour(sevenscenes_stairs):
    """Registered depth edges line up with colour edges better than the stored (unregistered) depth."""
    import cv2

    from relocal_ros.data.sevenscenes import SevenScenesSequence

    def edges(img):
        g = cv2.GaussianBlur(img.astype(np.float32), (5, 5), 0)
        return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))

    seq = SevenScenesSequence(sevenscenes_stairs / "seq-02")
    gains = []
    for i in range(len(seq)):
        f = seq[i]
        base = str(seq.items[i][1]).rsplit(".color.", 1)[0]
        raw = cv2.imread(base + ".depth.png", cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
        raw[raw >= 65.535] = 0
        grey = edges(cv2.cvtColor(f.rgb, cv2.COLOR_RGB2GRAY))
        corr = []
        for d in (f.depth, raw):
            valid = d > 0
            corr.append(np.corrcoef(grey[valid], edges(np.log(np.maximum(d, 0.1)))[valid])[0, 1])
        gains.append(corr[0] - corr[1])
    assert np.mean(gains) > 0.02, gains


def test_tum_download_without_calibration_gets_its_cameras_calibration(tum_rpy, tmp_path):
    """A TUM download has no calibration.yaml: the camera its folder name and rgb.txt header name (freiburg1..3)
    gives TUM's calibrated intrinsics and distortion, also for a split of it (header kept, images linked), and in
    a folder that names nothing the 525 px defaults stay; a calibration.yaml always wins."""
    import os

    from relocal_ros.data.tum import TUM_CAMERAS, TUM_DEFAULT_INTRINSICS
    src = tmp_path / "rgbd_dataset_freiburg2_xyz"
    src.mkdir()
    for name in ("rgb", "depth"):
        os.symlink((tum_rpy / name).resolve(), src / name)
    frames = read_file_list(tum_rpy / "rgb.txt")[:10]
    (src / "rgb.txt").write_text("# color images\n# file: 'rgbd_dataset_freiburg2_xyz.bag'\n# timestamp filename\n"
                                 + "".join(f"{s} {f}\n" for s, f in frames))
    (src / "depth.txt").write_text((tum_rpy / "depth.txt").read_text())
    seq = open_source(src)
    assert seq.intrinsics == TUM_CAMERAS["freiburg2"] and seq.intrinsics.has_distortion
    assert seq[0].intrinsics == TUM_CAMERAS["freiburg2"]
    m, q = split_tum(src, tmp_path / "splits" / "map", tmp_path / "splits" / "query")
    assert open_source(m).intrinsics == open_source(q).intrinsics == TUM_CAMERAS["freiburg2"]
    # the header alone names it (images copied elsewhere, folder renamed)
    plain = tmp_path / "recording"
    plain.mkdir()
    (plain / "rgb.txt").write_text((src / "rgb.txt").read_text())
    assert open_source(plain).intrinsics == TUM_CAMERAS["freiburg2"]
    (plain / "rgb.txt").write_text("# timestamp filename\n" + "".join(f"{s} {f}\n" for s, f in frames))
    assert open_source(plain).intrinsics == TUM_DEFAULT_INTRINSICS
    (src / "calibration.yaml").write_text((tum_rpy / "calibration.yaml").read_text())
    assert open_source(src).intrinsics == TUM_CAMERAS["freiburg1"]  # the yaml holds fr1's calibration


def test_unnamed_camera_is_a_warning(tum_rpy, tmp_path, caplog):
    """A folder with no calibration, no camera matrix and no TUM camera name gets the 525 px defaults, and says so
    at the command line's default log level (a guess every pose rests on)."""
    import logging

    from relocal_ros.data.tum import TUM_DEFAULT_INTRINSICS
    import shutil
    plain = tmp_path / "recording"
    (plain / "rgb").mkdir(parents=True)
    frames = read_file_list(tum_rpy / "rgb.txt")[:3]
    for _, f in frames:  # copied: linked images would name fr1 by where they are
        shutil.copy(tum_rpy / f, plain / f)
    (plain / "rgb.txt").write_text("# timestamp filename\n" + "".join(f"{s} {f}\n" for s, f in frames))
    with caplog.at_level(logging.WARNING):
        assert open_source(plain).intrinsics == TUM_DEFAULT_INTRINSICS
    assert any(r.levelno == logging.WARNING and "525 px defaults" in r.getMessage() for r in caplog.records)


def _sun3d_as_3dmatch(sun3d_studyroom, scene, n, with_matrix=True):
    """The first n SUN3D frames in 3DMatch's own layout: SCENE/seq-01/frame-XXXXXX.{color.png, depth.png (mm),
    pose.txt} and SCENE/camera-intrinsics.txt. Returns the TUM copy's frames for comparison."""
    import shutil

    import cv2
    tum = open_source(sun3d_studyroom)
    seq = scene / "seq-01"
    seq.mkdir(parents=True)
    if with_matrix:
        shutil.copy(sun3d_studyroom / "camera-intrinsics.txt", scene / "camera-intrinsics.txt")
    frames = [tum[i] for i in range(n)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(seq / f"frame-{i:06d}.color.png"), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(seq / f"frame-{i:06d}.depth.png"), np.round(f.depth * 1000).astype(np.uint16))
        np.savetxt(seq / f"frame-{i:06d}.pose.txt", f.pose)
    return frames


def test_3dmatch_scene_is_read_with_its_camera_matrix_and_registered_depth(sun3d_studyroom, tmp_path):
    """A scene in 3DMatch's layout (real SUN3D frames) is read with its camera-intrinsics.txt and its depth as
    stored (already registered to colour), not as 7-Scenes (525 px colour, 585 px depth re-projected 2.5 cm)."""
    frames = _sun3d_as_3dmatch(sun3d_studyroom, tmp_path / "studyroom", 3)
    scene = open_source(tmp_path / "studyroom")
    assert scene.intrinsics.fx == scene.intrinsics.fy == 570.342205
    assert (scene.intrinsics.cx, scene.intrinsics.cy, scene.intrinsics.width) == (320.0, 240.0, 640)
    assert not scene.intrinsics.has_distortion
    for i, want in enumerate(frames):
        got = scene[i]
        assert got.intrinsics == scene.intrinsics and np.array_equal(got.rgb, want.rgb)
        assert np.allclose(got.depth, want.depth, atol=1e-6)  # millimetres, as stored: the same metres
        assert np.allclose(got.pose, want.pose, atol=1e-6)
    # one sequence opened alone finds the matrix beside it
    assert open_source(tmp_path / "studyroom" / "seq-01").intrinsics == scene.intrinsics
    # without the matrix it is read as a 7-Scenes scene: another focal length, depth moved
    _sun3d_as_3dmatch(sun3d_studyroom, tmp_path / "bare", 1, with_matrix=False)
    bare = open_source(tmp_path / "bare")
    assert bare.intrinsics.fx == 525.0 and not np.allclose(bare[0].depth, frames[0].depth)


def test_3dmatch_copy_of_a_7scenes_scene_stays_7scenes(sevenscenes_stairs, tmp_path):
    """3DMatch's copies of 7-Scenes scenes carry the Kinect depth camera's matrix (585 px): their colour is the
    7-Scenes colour camera's, so they are read exactly as the 7-Scenes scene."""
    import shutil
    scene = tmp_path / "7-scenes-stairs"
    shutil.copytree(sevenscenes_stairs / "seq-02", scene / "seq-02")
    (scene / "camera-intrinsics.txt").write_text("585 0 320\n0 585 240\n0 0 1\n")
    got, want = open_source(scene), open_source(sevenscenes_stairs / "seq-02")
    assert got.intrinsics == want.intrinsics and got.intrinsics.fx == 525.0
    assert np.array_equal(got[0].depth, want[0].depth)


def test_tum_folder_with_a_camera_matrix_and_no_calibration(sun3d_studyroom, tmp_path):
    """A TUM folder converted from SUN3D / 3DMatch that kept camera-intrinsics.txt but has no calibration.yaml gets
    that matrix, and so do its map and query splits; a calibration.yaml still wins; a malformed matrix is a clear
    error."""
    import os
    src = tmp_path / "studyroom"
    src.mkdir()
    for name in ("rgb", "depth"):
        os.symlink((sun3d_studyroom / name).resolve(), src / name)
    for name in ("rgb.txt", "depth.txt", "groundtruth.txt", "camera-intrinsics.txt"):
        (src / name).write_text((sun3d_studyroom / name).read_text())
    want = open_source(sun3d_studyroom).intrinsics  # from its calibration.yaml
    assert open_source(src).intrinsics == want
    m, q = split_tum(src, tmp_path / "splits" / "map", tmp_path / "splits" / "query")
    assert open_source(m).intrinsics == open_source(q).intrinsics == want
    (src / "calibration.yaml").write_text((sun3d_studyroom / "calibration.yaml").read_text().replace(
        "fx: 570.342205", "fx: 571.0"))
    assert open_source(src).intrinsics.fx == 571.0
    (src / "calibration.yaml").unlink()
    (src / "camera-intrinsics.txt").write_text("570 0 320\n0 570 240\n")
    with pytest.raises(ValueError, match="camera-intrinsics.txt: not a 3x3 pinhole camera matrix"):
        open_source(src)


def _tum_copy(tum_rpy, dest, n):
    """The first n frames of fr1_rpy as a TUM folder of their own (files copied, so that they can be spoiled)."""
    import shutil
    dest.mkdir()
    for name in ("calibration.yaml", "groundtruth.txt"):
        shutil.copy(tum_rpy / name, dest / name)
    for listing in ("rgb.txt", "depth.txt"):
        entries = read_file_list(tum_rpy / listing)[:n]
        (dest / listing).write_text("".join(f"{s} {rel}\n" for s, rel in entries))
        for _, rel in entries:
            (dest / rel).parent.mkdir(exist_ok=True)
            shutil.copy(tum_rpy / rel, dest / rel)
    return read_file_list(dest / "rgb.txt"), read_file_list(dest / "depth.txt")


def _spoil(folder, rgb, depth):
    """Frame 1: a colour preview saved as its depth; frame 2: depth at half size; frame 3: colour at half size."""
    import cv2
    cv2.imwrite(str(folder / depth[1][1]), cv2.imread(str(folder / rgb[1][1])))
    d = cv2.imread(str(folder / depth[2][1]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(folder / depth[2][1]), d[::2, ::2])
    c = cv2.imread(str(folder / rgb[3][1]))
    cv2.imwrite(str(folder / rgb[3][1]), cv2.resize(c, (320, 240)))


def test_ill_formed_frames_are_refused_with_the_reason(tum_rpy, tmp_path):
    """Depth that cannot be aligned to its colour image, or a colour image of another size than the calibration,
    is refused with what is wrong: read as it is, its pixels would meet another camera's model and give a wrong
    pose (before, a half-size image was processed with the full-size intrinsics)."""
    from relocal_ros.data.frames import FrameFormatError
    rgb, depth = _tum_copy(tum_rpy, tmp_path / "q", 5)
    _spoil(tmp_path / "q", rgb, depth)
    src = open_source(tmp_path / "q")
    assert src[0].depth.shape == (480, 640) and src[4].depth.shape == (480, 640)
    with pytest.raises(FrameFormatError, match="depth must be one 16-bit or float channel, got 3 x uint8"):
        src[1]
    with pytest.raises(FrameFormatError, match="depth is 320x240, its colour image 640x480"):
        src[2]
    with pytest.raises(FrameFormatError, match="image is 320x240, the source's calibration is 640x480"):
        src[3]


@pytest.mark.slow
def test_map_and_queries_skip_ill_formed_frames_and_count_them(tum_rpy, tmp_path):
    """build-map skips a spoiled frame with a warning instead of losing the whole map; localize refuses it and
    counts it, and neither ends with a traceback."""
    import subprocess
    import sys
    rgb, depth = _tum_copy(tum_rpy, tmp_path / "m", 12)
    _spoil(tmp_path / "m", rgb, depth)
    run = [sys.executable, "-m", "relocal_ros.cli"]
    p = subprocess.run([*run, "build-map", tmp_path / "m", "--out", tmp_path / "map", "--min-rotation", "0"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "3 of 12 frames were unreadable or ill-formed and were skipped" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([*run, "-q", "localize", tmp_path / "map", tmp_path / "m", "--out", tmp_path / "est.txt"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "3 unreadable or failed" in p.stdout and "Traceback" not in p.stderr
    localized = [ln.split()[0] for ln in (tmp_path / "est.txt").read_text().splitlines()]
    assert localized and not {rgb[1][0], rgb[2][0], rgb[3][0]} & set(localized)
