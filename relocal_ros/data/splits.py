"""Map/query splits of a TUM folder, as TUM folders whose rgb.txt/depth.txt list a subset of the images (the
images themselves are linked, not copied). The query folder carries no ground truth."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from relocal_ros.data.frames import CAMERA_MATRIX_FILE
from relocal_ros.data.tum import header_lines, read_file_list


def _write_list(path: Path, header: str, entries) -> None:
    path.write_text(header + "".join(f"{s} {f}\n" for s, f in entries))


def split_tum(source, map_out, query_out, ratio: float = 0.6) -> tuple[Path, Path]:
    src = Path(source).resolve()
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    rgb = read_file_list(src / "rgb.txt")
    depth = read_file_list(src / "depth.txt") if (src / "depth.txt").is_file() else []
    cut = int(round(len(rgb) * ratio))
    t_cut = (float(rgb[cut - 1][0]) + float(rgb[cut][0])) / 2 if 0 < cut < len(rgb) else float("inf")
    for out, part, gt in ((Path(map_out), rgb[:cut], True), (Path(query_out), rgb[cut:], False)):
        out.mkdir(parents=True, exist_ok=True)
        for sub in ("rgb", "depth"):
            link = out / sub
            if (src / sub).is_dir() and not link.exists():
                os.symlink(src / sub, link, target_is_directory=True)
        # the source's header stays: it names the camera (tum.tum_camera) when there is no calibration.yaml
        head = "".join(f"{h}\n" for h in header_lines(src / "rgb.txt")) or "# timestamp filename\n"
        _write_list(out / "rgb.txt", f"# color images (subset of {src.name})\n{head}", part)
        lo, hi = float(part[0][0]) - 0.05, float(part[-1][0]) + 0.05
        _write_list(out / "depth.txt", "# depth maps (subset)\n# timestamp filename\n",
                    [(s, f) for s, f in depth if lo <= float(s) <= hi and ((float(s) < t_cut) == gt)])
        for calib in ("calibration.yaml", CAMERA_MATRIX_FILE):
            if (src / calib).is_file():
                shutil.copy(src / calib, out / calib)
        if gt and (src / "groundtruth.txt").is_file():
            shutil.copy(src / "groundtruth.txt", out / "groundtruth.txt")
    return Path(map_out), Path(query_out)
