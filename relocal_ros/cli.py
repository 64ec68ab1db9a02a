"""`relocal` command line: each sub-command is a few lines over the library modules."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("relocal")


def _cmd_build_map(a) -> int:
    from relocal_ros.data.sources import open_source
    from relocal_ros.mapping.builder import build_map
    from relocal_ros.settings import parse_assignment
    conf = {name: getattr(a, name) for name in _flags("mapping")}
    conf["pose_sigma"] = a.pose_sigma
    for text in a.set or []:  # any other mapping setting
        _, name, value = parse_assignment(text, stages=("mapping",))
        conf[name] = value
    kmap = build_map(open_source(a.source), conf, progress=not a.quiet)
    version = kmap.save(a.out)
    print(f"map: {len(kmap)} keyframes -> {version}")
    return 0


def _load_yaml_conf(path):
    if not path:
        return None
    import yaml
    with open(path) as f:
        return yaml.safe_load(f) or None


def _cmd_localize(a) -> int:
    from tqdm import tqdm

    from relocal_ros.data.sources import open_source
    from relocal_ros.data.trajectory import format_covariance_line, format_tum_line
    from relocal_ros.pipeline import Relocalizer, merge_conf, default_conf

    from relocal_ros.settings import parse_assignment, setting

    conf = merge_conf(default_conf(), _load_yaml_conf(a.config))
    for name in _flags("inference") + _flags("solver"):  # the named flags, when given
        if getattr(a, name) is not None:
            conf[setting(name).stage][name] = getattr(a, name)
    for text in a.set or []:  # any other localization setting
        stage, name, value = parse_assignment(text)
        conf[stage][name] = value
    reloc = Relocalizer.from_map_dir(a.map, conf)
    source = open_source(a.query, with_ground_truth=False)  # never let query ground truth near the estimator
    lines, cov_lines, latencies, refusals, unreadable, read_errors = [], [], [], 0, 0, 0
    warmed = set()  # image sizes whose lazily built parts exist (the first image's 1-3 s made the printed p95)
    for i in tqdm(range(len(source)), desc="localize", unit="img", disable=a.quiet):
        try:
            frame = source[i]
        except (FileNotFoundError, ValueError, OSError) as e:  # one bad image is refused, as the nodes do
            unreadable, read_errors = unreadable + 1, read_errors + 1
            log.warning("image %d of %s refused: %s", i, a.query, e)
            if read_errors == len(source):  # not one image: the query source itself is unusable
                raise ValueError(f"none of the {len(source)} query images could be read; the last: {e}") from e
            continue
        try:
            if frame.rgb.shape not in warmed:
                warmed.add(frame.rgb.shape)
                reloc.warm_up(frame)
            t0 = time.perf_counter()
            est = reloc.localize(frame)
        except Exception:  # a bug must not cost the trajectory of every other image: refuse this one, loudly
            log.exception("image %s: localization failed with an internal error; refused", frame.stamp)
            unreadable += 1
            continue
        latencies.append(time.perf_counter() - t0)
        if est.accepted:
            lines.append(format_tum_line(frame.stamp, est.T_map_cam))
            cov_lines.append(format_covariance_line(frame.stamp, est.covariance))
        else:
            refusals += 1
            log.info("%s refused: %s", frame.stamp, est.reason)
    Path(a.out).write_text("".join(line + "\n" for line in lines))
    if a.covariance_out:
        Path(a.covariance_out).write_text("".join(line + "\n" for line in cov_lines))
    lat = np.array(latencies) * 1000
    bad = f", {unreadable} unreadable or failed" if unreadable else ""
    print(f"localized {len(lines)} of {len(source)} images ({refusals} refused{bad}, -v says why) -> {a.out}")
    if len(lat):
        print(f"latency per image: p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms "
              "(model start-up excluded)")
    return 0


def _cmd_evaluate(a) -> int:
    from relocal_ros.data.sources import open_source
    from relocal_ros.evaluation.metrics import evaluate_trajectory
    queries = None
    if a.queries:
        src = open_source(a.queries, with_ground_truth=False)
        queries = [s for s, _ in src.rgb] if hasattr(src, "rgb") else [src[i].stamp for i in range(len(src))]
    report = evaluate_trajectory(a.estimate, a.ground_truth, queries)
    if report.n_queries == 0 and len(report.translation_errors) == 0:
        # nothing to score: say why instead of printing a table of NaN (e.g. a TUM trajectory against a 7-Scenes
        # folder, or a split copied from one sequence evaluated against another)
        stamps = report.no_ground_truth or queries or []
        raise ValueError(f"no {'estimate or query' if queries else 'estimate'} has ground truth in "
                         f"{a.ground_truth}" + (f" (first stamp '{stamps[0]}')" if stamps else ""))
    print(report.format())
    if a.covariance:
        from relocal_ros.evaluation.metrics import covariance_coverage
        print(covariance_coverage(a.estimate, a.covariance, a.ground_truth).format())
    return 0


def _cmd_synth(a) -> int:
    from relocal_ros.data.synth import generate_scene
    out = generate_scene(a.out, a.seed, width=a.width, height=a.height, workers=a.workers, progress=not a.quiet,
                         wide_queries=a.wide_queries, sensor_model=a.sensor_model)
    print(f"synthetic scene -> {out}")
    return 0


def _cmd_bag_from_dataset(a) -> int:
    from relocal_ros.data.bags import bag_from_dataset
    from relocal_ros.data.sources import open_source
    bag_from_dataset(open_source(a.source), a.out, a.storage, compressed=a.compressed)
    print(f"bag -> {a.out}")
    return 0


def _cmd_split(a) -> int:
    from relocal_ros.data.splits import split_tum
    map_dir, query_dir = split_tum(a.source, a.map_out, a.query_out, a.ratio)
    print(f"map split -> {map_dir}\nquery split -> {query_dir}\n(their rgb/ and depth/ link to {a.source}'s images)")
    return 0


def _cmd_train_scene(a) -> int:
    if a.method == "exrenet":
        from relocal_ros.networks.exrenet.finetune import main as train_scene_main
    elif a.method == "sanet":
        from relocal_ros.networks.sanet.finetune import main as train_scene_main
    else:
        from relocal_ros.networks.dsacpp.train import main as train_scene_main
    argv = [a.map, "--budget", str(a.budget)] + (["--no-resume"] if a.no_resume else [])
    return train_scene_main(argv + (["--threads", str(a.threads)] if a.threads else []))


def _flags(stage: str) -> list[str]:
    """The settings of a stage that have a named flag (relocal_ros/settings.py `cli`)."""
    from relocal_ros.settings import all_settings
    return [s.name for s in all_settings() if s.stage == stage and s.cli]


def _add_setting_flags(parser, stage: str, with_defaults: bool) -> None:
    """One option per setting of `stage` that has a named flag: type, choices, help and default from the schema
    (localize: default None, so that only given flags override the configuration)."""
    from relocal_ros.methods import method_names
    from relocal_ros.settings import setting
    for name in _flags(stage):
        s = setting(name)
        choices = list(method_names()) if name == "method" else list(s.choices) if s.choices else None
        default = s.default if with_defaults else None
        shown = f" (default {s.default})" if s.default not in ("", None) else ""
        parser.add_argument(s.cli, dest=name, type=type(s.default), choices=choices, default=default,
                            help=s.description.replace("%", "%%") + shown)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="relocal", description="Visual relocalization in a known place (relocal_ros).")
    p.add_argument("-v", "--verbose", action="store_true", help="log every refusal and step")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("build-map", help="build a keyframe map from a TUM / 7-Scenes folder or a ROS 2 bag")
    s.add_argument("source")
    s.add_argument("--out", required=True, help="map directory (created; an existing map gets a new version)")
    _add_setting_flags(s, "mapping", with_defaults=True)
    s.add_argument("--pose-sigma", type=float, nargs=2, metavar=("M", "DEG"), default=None,
                   help="accuracy of the source's poses, kept in the map as the covariance floor for map error "
                        "(default: what the source states, e.g. exact for `relocal synth` scenes, else 0.01 m 1 deg)")
    s.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any mapping setting (repeatable; lists in YAML, e.g. rotations=[0,45,-45,90,-90]; "
                        "`python -m relocal_ros.settings --markdown` lists them)")
    s.set_defaults(func=_cmd_build_map)

    s = sub.add_parser("localize", help="localize every image of QUERY in MAP, write a TUM trajectory")
    s.add_argument("map")
    s.add_argument("query")
    s.add_argument("--out", required=True, help="TUM trajectory (timestamp tx ty tz qx qy qz qw, camera-to-map)")
    _add_setting_flags(s, "inference", with_defaults=False)
    _add_setting_flags(s, "solver", with_defaults=False)
    s.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any inference or solver setting (repeatable; `python -m relocal_ros.settings --markdown` "
                        "lists them), applied after --config")
    s.add_argument("--config", default=None, help="YAML with 'inference' and 'solver' overrides")
    s.add_argument("--covariance-out", default=None,
                   help="COV.txt: per line of EST.txt its stamp and the 36 entries of the row-major 6x6 covariance "
                        "(x y z rot_x rot_y rot_z; metres, radians, map frame, the camera pose of EST.txt)")
    s.set_defaults(func=_cmd_localize)

    s = sub.add_parser("train-scene", help="train the map's DSAC++ scene-coordinate head (--method dsacpp, stored in "
                       "MAP/scene_coordinates), or fine-tune SANet on the map's keyframes (--method sanet, stored in "
                       "MAP/sanet) or ExReNet on pairs of them (--method exrenet, stored in MAP/exrenet); resumable")
    s.add_argument("map")
    s.add_argument("--method", default="dsacpp", choices=["dsacpp", "sanet", "exrenet"],
                   help="what to train for this map (default dsacpp); sanet and exrenet start from the shipped "
                        "weights and print their validation error on held-out keyframes before / after")
    s.add_argument("--budget", type=float, default=600.0,
                   help="wall-clock seconds for this map in all, earlier runs included (default 600)")
    s.add_argument("--no-resume", action="store_true", help="start again instead of continuing the checkpoint")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    s.set_defaults(func=_cmd_train_scene)

    s = sub.add_parser("evaluate", help="median errors and shares within 5cm/5deg, 10cm/10deg, 25cm/10deg")
    s.add_argument("estimate")
    s.add_argument("ground_truth", help="TUM groundtruth.txt, TUM folder or 7-Scenes folder")
    s.add_argument("--queries", default=None, help="query folder: refused/missing images count as failures")
    s.add_argument("--covariance", default=None,
                   help="COV.txt from `localize --covariance-out`: prints the share of ground truths inside the "
                        "published 95 %% ellipsoid (position 3-DoF and full 6-DoF)")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("synth", help="generate a synthetic scene in the 7-Scenes layout with calibration.yaml")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--width", type=int, default=640)
    s.add_argument("--height", type=int, default=480)
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--wide-queries", type=int, default=0,
                   help="also seq-04: N queries 0.5-1.5 m and 30-60 deg away from the mapping walk")
    s.add_argument("--sensor-model", action="store_true",
                   help="degrade every frame like a real RGB-D sensor (depth noise ~z^2, holes at depth edges, "
                        "motion blur, exposure changes)")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("bag-from-dataset", help="write a ROS 2 bag (colour, aligned depth, camera_info, ground truth)")
    s.add_argument("source")
    s.add_argument("--out", required=True)
    s.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    s.add_argument("--compressed", action="store_true",
                   help="write colour as image_transport 'compressed' (JPEG) and depth as 'compressedDepth' (PNG), "
                        "only those topics, as a robot records them")
    s.set_defaults(func=_cmd_bag_from_dataset)

    s = sub.add_parser("split", help="split a TUM folder into a map part (first RATIO of frames) and a query part; "
                       "their rgb/ and depth/ are links to the source's folders (the images are shared, not copied: "
                       "copy with cp -rL before editing any)")
    s.add_argument("source")
    s.add_argument("--map-out", required=True)
    s.add_argument("--query-out", required=True)
    s.add_argument("--ratio", type=float, default=0.6)
    s.set_defaults(func=_cmd_split)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from relocal_ros.errors import UserInputError
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, UserInputError) as e:  # user errors: one line, no traceback
        print(f"relocal {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
