"""`relocal-graph`: start keyframe_indexer, inference_node and pose_solver without `launch` (which is not on PyPI):
as three processes (default, like a launch file) or in one process with a multi-threaded executor. Both read the
same parameters file (config/relocal.yaml) and pass any --ros-args through. The nodes are lifecycle nodes; here
they configure and activate themselves (their `autostart` parameter, default true).

    relocal-graph --map MAP [--single-process] [--params-file config/relocal.yaml] [--ros-args ...]"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

NODES = ("keyframe_indexer", "inference_node", "pose_solver_node")
from relocal_ros.nodes.dds_profile import use_large_data_profile  # noqa: E402
from relocal_ros.resources import resource_dir  # noqa: E402

DEFAULT_PARAMS = resource_dir("config") / "relocal.yaml"   # source tree, installed share/ or the ament index


def _params_file(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if DEFAULT_PARAMS.is_file():
        return str(DEFAULT_PARAMS)
    try:  # installed with colcon / pip: the share directory
        from ament_index_python.packages import get_package_share_directory
        p = Path(get_package_share_directory("relocal_ros")) / "config" / "relocal.yaml"
        return str(p) if p.is_file() else None
    except Exception:
        return None


def ros_args(map_path: str | None, params_file: str | None, extra: list[str]) -> list[str]:
    args = ["--ros-args"]
    if params_file:
        args += ["--params-file", params_file]
    if map_path:
        args += ["-p", f"map_path:={map_path}"]
    if extra:
        args += [a for a in extra if a != "--ros-args"]
    return args


class GraphProcesses:
    """The three nodes as child processes; a context manager that stops them (SIGINT, then SIGKILL)."""

    def __init__(self, map_path: str | None = None, params_file: str | None = None, extra: list[str] | None = None,
                 env: dict | None = None, log_dir: Path | None = None):
        self.args = ros_args(map_path, _params_file(params_file), extra or [])
        self.env = {**os.environ, **(env or {})}
        self.log_dir = Path(log_dir) if log_dir else None
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> "GraphProcesses":
        for name in NODES:
            out = open(self.log_dir / f"{name}.log", "w") if self.log_dir else None
            self.procs[name] = subprocess.Popen([sys.executable, "-m", f"relocal_ros.nodes.{name}", *self.args],
                                                env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None)
        return self

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}

    def restart(self, name: str, kill: bool = False) -> None:
        """Stop one node (SIGINT, or SIGKILL with kill=True) and start it again; the others keep running."""
        if kill and self.procs[name].poll() is None:
            self.procs[name].kill()
            self.procs[name].wait()
        self._stop_one(self.procs[name])
        out = open(self.log_dir / f"{name}.restart.log", "w") if self.log_dir else None
        self.procs[name] = subprocess.Popen([sys.executable, "-m", f"relocal_ros.nodes.{name}", *self.args],
                                            env=self.env, stdout=out, stderr=subprocess.STDOUT if out else None)

    @staticmethod
    def _stop_one(p: subprocess.Popen, timeout: float = 10.0) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _single_process(args: list[str]) -> int:
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    from relocal_ros.nodes.inference_node import InferenceNode
    from relocal_ros.nodes.keyframe_indexer import KeyframeIndexerNode
    from relocal_ros.nodes.pose_solver_node import PoseSolverNode
    use_large_data_profile()
    rclpy.init(args=["relocal-graph", *args])
    nodes = []
    try:
        nodes = [KeyframeIndexerNode(), InferenceNode(), PoseSolverNode()]
        for n in nodes:
            if n.autostart and not n.start():
                print(f"relocal-graph: {n.get_name()} could not be configured and activated", file=sys.stderr)
                return 1
        # each node on the executor its process would give it (ManagedNode.executor_threads): the short-callback
        # nodes share a single-threaded one, the others a multi-threaded one in a thread of its own
        single = SingleThreadedExecutor()
        multi = MultiThreadedExecutor(num_threads=max(n.executor_threads for n in nodes))
        for n in nodes:
            (single if n.executor_threads == 1 else multi).add_node(n)
        threading.Thread(target=multi.spin, daemon=True).start()
        single.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, extra = argv[:i], argv[i:]
    ap = argparse.ArgumentParser(prog="relocal-graph", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--map", default=None, help="map directory (else map_path from the parameters file)")
    ap.add_argument("--params-file", default=None, help=f"default: {DEFAULT_PARAMS.name} of the package")
    ap.add_argument("--single-process", action="store_true", help="one process (the nodes' executors in two threads)")
    a = ap.parse_args(argv)
    args = ros_args(a.map, _params_file(a.params_file), extra)
    if a.single_process:
        return _single_process(args)
    graph = GraphProcesses(a.map, a.params_file, extra).start()
    try:
        while all(graph.alive().values()):
            time.sleep(0.5)
        dead = [n for n, ok in graph.alive().items() if not ok]
        print(f"relocal-graph: {', '.join(dead)} exited; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        graph.stop()


if __name__ == "__main__":
    sys.exit(main())
