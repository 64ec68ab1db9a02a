"""Test helper process for kill -9 during a map save. Loads a map once (imports paid once), then per line
`trial SEED DELAY_S` on stdin forks a child that changes the map's metadata and saves a new version, SIGKILLs it
after DELAY_S unless it finished first (never when DELAY_S < 0), and prints `killed` or `finished [seconds]`. fork keeps each trial at milliseconds
while the kill still lands at an arbitrary point of KeyframeMap.save (numpy, faiss, fsync, rename)."""
import os
import signal
import sys
import time

from relocal_ros.mapping.keyframe_map import KeyframeMap


def main(map_dir: str) -> None:
    kmap = KeyframeMap.load(map_dir)
    print("ready", flush=True)
    for line in sys.stdin:
        _, seed, delay = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                kmap.metadata["trial"] = int(seed)
                kmap.save(map_dir)
            finally:
                os._exit(0)
        t0 = time.perf_counter()
        if float(delay) < 0:  # no kill: a timing run
            os.waitpid(pid, 0)
            print(f"finished {time.perf_counter() - t0:.4f}", flush=True)
            continue
        time.sleep(float(delay))
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("killed", flush=True)
        else:
            print("finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
