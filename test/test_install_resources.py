"""An installed relocal_ros (`pip install .`, not editable, into a fresh virtualenv) finds its shipped weights in
<prefix>/share/relocal_ros/models from outside the source tree, and maps + localizes with them."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (REPO / "models").iterdir() if p.is_file())


def test_source_tree_lookup_finds_every_shipped_model():
    from relocal_ros.resources import model_path, models_dir
    assert models_dir() == REPO / "models"
    for name in SHIPPED:
        assert model_path(name) == REPO / "models" / name


def test_lookup_order_and_override(tmp_path, monkeypatch):
    from relocal_ros import resources
    c = resources.candidates("models")
    assert c[0] == REPO / "models" and Path(sys.prefix) / "share" / "relocal_ros" / "models" in c
    monkeypatch.setenv("RELOCAL_MODELS_DIR", str(tmp_path))
    resources.resource_dir.cache_clear()
    try:
        assert resources.models_dir() == tmp_path
    finally:
        monkeypatch.delenv("RELOCAL_MODELS_DIR")
        resources.resource_dir.cache_clear()


@pytest.mark.slow
def test_pip_installed_package_localizes_with_the_shipped_weights(tmp_path):
    """A fresh venv (system site packages of this interpreter's base, plus this venv's third-party packages on a
    path line: torch is not downloaded again), `pip install --no-deps .` of a copy of the sources, then from
    /tmp: resolve every shipped model into the venv's share/, and map + localize two small bags with the NetVLAD
    descriptor (its weights are one of the shipped files)."""
    pytest.importorskip("rosbags", reason="rosbags not installed")
    import planar_scene as ps
    from relocal_ros.data.bags import write_bag
    from graph_probe import query_frames

    src = tmp_path / "src"
    for item in ("relocal_ros", "models", "config", "launch", "resource", "setup.py", "setup.cfg", "package.xml"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, src / item)
    for d in src.rglob("__pycache__"):
        shutil.rmtree(d)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "relocal_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co., no .pth run
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RELOCAL_MODELS_DIR")}
    # the build backend: this venv's setuptools (the base interpreter's may predate a built-in bdist_wheel)
    build_env = {**env, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", str(src)], capture_output=True, text=True, timeout=600,
                       env=build_env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    shutil.rmtree(src)   # nothing of the sources is left to fall back on

    check = (
        "import sys, relocal_ros, relocal_ros.resources as r\n"
        "from pathlib import Path\n"
        "assert Path(relocal_ros.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), relocal_ros.__file__\n"
        "import relocal_ros.networks.exrenet.runtime as a, relocal_ros.networks.sanet.runtime as b\n"
        "import relocal_ros.retrieval.densevlad as c, relocal_ros.retrieval.netvlad as d\n"
        "import relocal_ros.nodes.runner as g\n"
        "paths = [a.DEFAULT_WEIGHTS, b.DEFAULT_WEIGHTS, c.DEFAULT_MODEL, d.DEFAULT_WEIGHTS, g.DEFAULT_PARAMS]\n"
        f"paths += [r.model_path(n) for n in {SHIPPED!r}]\n"
        "share = Path(sys.prefix) / 'share' / 'relocal_ros'\n"
        "for p in paths:\n"
        "    assert Path(p).is_file() and Path(p).resolve().is_relative_to(share.resolve()), p\n"
        "print(r.models_dir())\n")
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.run([str(py), "-c", check], capture_output=True, text=True, timeout=300, env=env, cwd=out)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.strip() == str(venv / "share" / "relocal_ros" / "models")

    write_bag(ps.map_frames(), out / "map.bag")
    queries = query_frames(4)
    for q in queries:
        q.pose = None
    write_bag(queries, out / "query.bag")

    def relocal(*args):
        r = subprocess.run([str(py), "-m", "relocal_ros.cli", "--quiet", *map(str, args)], capture_output=True,
                           text=True, timeout=900, env=env, cwd=out)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        return r.stdout

    relocal("build-map", "map.bag", "--out", "map", "--global-descriptor", "netvlad")
    relocal("localize", "map", "query.bag", "--out", "est.txt")
    lines = (out / "est.txt").read_text().split("\n")
    assert len([ln for ln in lines if ln.strip()]) >= 3, lines
    import json
    manifest = next((out / "map").glob("v*/manifest.json"), None)
    if manifest is not None:
        assert "netvlad" in json.dumps(json.loads(manifest.read_text()))
