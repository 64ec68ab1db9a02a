"""The command line as evaluation scripts call it: real processes, real files."""
import subprocess
import sys

import pytest

from relocal_ros.data.trajectory import read_tum_trajectory


def relocal(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "relocal_ros.cli", "-q", *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"relocal {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.mark.slow
def test_build_localize_evaluate_on_real_tum_split(tum_rpy, tmp_path):
    relocal("split", tum_rpy, "--map-out", tmp_path / "m", "--query-out", tmp_path / "q", "--ratio", "0.85")
    relocal("build-map", tmp_path / "m", "--out", tmp_path / "map", "--min-rotation", "10")
    out = relocal("localize", tmp_path / "map", tmp_path / "q", "--out", tmp_path / "est.txt").stdout
    assert "localized" in out and "p95" in out
    stamps, poses = read_tum_trajectory(tmp_path / "est.txt")
    queries = [l.split()[0] for l in (tmp_path / "q" / "rgb.txt").read_text().splitlines() if not l.startswith("#")]
    assert len(stamps) >= 0.8 * len(queries) and set(stamps) <= set(queries)  # stamps verbatim from rgb.txt
    report = relocal("evaluate", tmp_path / "est.txt", tum_rpy / "groundtruth.txt", "--queries", tmp_path / "q").stdout
    share = float(report.split("within 5 cm / 5 deg:")[1].split("%")[0])
    assert share >= 75.0, report
    assert "median translation error" in report and "within 25 cm / 10 deg" in report


def test_evaluate_counts_refusals_as_failures(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("1.0 0 0 0 0 0 0 1\n2.0 1 0 0 0 0 0 1\n3.0 2 0 0 0 0 0 1\n")
    est = tmp_path / "est.txt"
    est.write_text("1.0 0.01 0 0 0 0 0 1\n2.0 1.5 0 0 0 0 0 1\n")
    q = tmp_path / "q"
    q.mkdir()
    (q / "rgb.txt").write_text("1.0 rgb/1.png\n2.0 rgb/2.png\n3.0 rgb/3.png\n")
    out = relocal("evaluate", est, gt, "--queries", q).stdout
    assert "2 estimates of 3 queries" in out
    assert "within 5 cm / 5 deg: 33.3 %" in out and "within 25 cm / 10 deg: 33.3 %" in out


def test_user_errors_are_one_clear_line(tmp_path):
    p = relocal("build-map", tmp_path / "missing", "--out", tmp_path / "map", check=False)
    assert p.returncode == 2 and "no such file or folder" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "map").mkdir()
    (tmp_path / "map" / "CURRENT").write_text("v000001\n")
    p = relocal("localize", tmp_path / "map", tmp_path, "--out", tmp_path / "e.txt", check=False)
    assert p.returncode == 2 and "not a complete map version" in p.stderr


def test_build_map_takes_any_mapping_setting_and_refuses_bad_ones_in_one_line(tum_desk, tmp_path):
    """`build-map --set NAME=VALUE`: lists in YAML (keyframes stored turned by +-90 deg as well, for a camera that
    rolls that far); a localization setting, a malformed list or a rotation list not starting upright: exit 2 and
    one line, no map written."""
    import json
    relocal("build-map", tum_desk, "--out", tmp_path / "map", "--set", "rotations=[0, 90, -90]",
            "--set", "vocabulary_words=8")
    version = (tmp_path / "map" / "CURRENT").read_text().strip()
    manifest = json.loads((tmp_path / "map" / version / "manifest.json").read_text())
    assert manifest["rotations"] == [0.0, 90.0, -90.0]
    for bad, why in (("min_similarity=0.5", "not a mapping setting"), ("rotations=[0, 45", "not a YAML value"),
                     ("rotations=[45, 0]", "the first 0"), ("vocabulary_words=1", "must be in [2, 4096]")):
        p = relocal("build-map", tum_desk, "--out", tmp_path / "bad", "--set", bad, check=False)
        assert p.returncode == 2 and why in p.stderr and "Traceback" not in p.stderr, (bad, p.stderr)
        assert not (tmp_path / "bad").exists()


def test_evaluate_a_7scenes_split_copied_into_plain_folders(sevenscenes_stairs, tmp_path):
    """A split made by copying a 7-Scenes sequence's frames into a plain folder (not named seq-NN) numbers them as
    sequence 0; `evaluate` against the original sequence matches them by frame number. Where that is ambiguous (a
    scene folder of several sequences) or nothing matches, it says so instead of printing NaN."""
    import shutil

    import numpy as np
    from scipy.spatial.transform import Rotation
    seq = sevenscenes_stairs / "seq-01"
    queries = tmp_path / "queries"
    queries.mkdir()
    lines = []
    for colour in sorted(seq.glob("frame-*.color.*")):
        shutil.copy(colour, queries / colour.name)          # colour only: a query folder has no ground truth
        frame = int(colour.name.split("-")[1].split(".")[0])
        T = np.loadtxt(str(colour).rsplit(".color.", 1)[0] + ".pose.txt")
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        lines.append(f"{frame} {T[0, 3] + 0.02} {T[1, 3]} {T[2, 3]} {q[0]} {q[1]} {q[2]} {q[3]}")
    est = tmp_path / "est.txt"
    est.write_text("\n".join(lines[1:]) + "\n")             # the first query refused
    n = len(lines)
    out = relocal("evaluate", est, seq, "--queries", queries).stdout
    assert f"{n - 1} estimates of {n} queries" in out, out
    assert f"within 5 cm / 5 deg: {100 * (n - 1) / n:.1f} %" in out and "median translation error: 2.00 cm" in out
    p = relocal("evaluate", est, sevenscenes_stairs, "--queries", queries, check=False)   # which sequence?
    assert p.returncode == 2 and "no estimate or query has ground truth" in p.stderr and "Traceback" not in p.stderr
