"""Procedural indoor scenes as lists of textured, yawed boxes: a house of one or two rooms in a row joined by a
door opening, with walls, floor, ceiling, tables (top, legs, an object on top), cabinets, shelves and posters.
World frame: z up, floor at z = 0, rooms side by side along x. Deterministic for a seed."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

WALL = 0.1


@dataclass
class Box:
    centre: tuple        # x, y, z (world: z up)
    size: tuple          # extent along the box's x, y, z
    yaw: float           # rotation about z, radians
    texture: int
    uv_scale: float = 1.0  # texture repeats per metre (posters: one image over the face)
    kind: str = ""


@dataclass
class Room:
    x0: float
    x1: float
    y0: float
    y1: float
    height: float


@dataclass
class Scene:
    seed: int
    rooms: list
    boxes: list
    light: tuple
    ambient: float = 0.55
    intensity: float = 1.2

    def room_at(self, x: float, y: float) -> Room | None:
        for r in self.rooms:
            if r.x0 <= x <= r.x1 and r.y0 <= y <= r.y1:
                return r
        return None

    def clearance(self, x: float, y: float) -> float:
        """Horizontal distance from (x, y) to the nearest wall, furniture or poster footprint (0 inside one)."""
        best = np.inf
        for b in self.boxes:
            if b.kind in ("floor", "ceiling"):
                continue
            c, s = np.cos(b.yaw), np.sin(b.yaw)
            dx, dy = x - b.centre[0], y - b.centre[1]
            local = np.abs([c * dx + s * dy, -s * dx + c * dy]) - np.asarray(b.size[:2]) / 2
            best = min(best, float(np.linalg.norm(np.maximum(local, 0.0))))
        return best

    def to_dict(self) -> dict:
        return {"seed": self.seed, "rooms": [asdict(r) for r in self.rooms], "boxes": [asdict(b) for b in self.boxes],
                "light": list(self.light), "ambient": self.ambient, "intensity": self.intensity}


def make_scene(seed: int, roles: dict, n_rooms: int | None = None) -> Scene:
    rng = np.random.default_rng(seed)
    n_rooms = int(rng.integers(1, 3)) if n_rooms is None else n_rooms
    height = float(rng.uniform(2.5, 3.0))
    rooms, boxes, x = [], [], 0.0
    d = float(rng.uniform(3.8, 5.5))  # rooms in a row share their depth
    for _ in range(n_rooms):
        w = float(rng.uniform(4.0, 6.5))
        rooms.append(Room(x, x + w, 0.0, d, height))
        x += w
    pick = lambda role: int(rng.choice(roles[role]))  # noqa: E731
    total_x, depth = x, max(r.y1 for r in rooms)
    floor_tex, ceil_tex = pick("floor"), pick("ceiling")
    boxes.append(Box((total_x / 2, depth / 2, -WALL / 2), (total_x + 2 * WALL, depth + 2 * WALL, WALL), 0.0,
                     floor_tex, 1.0, "floor"))
    boxes.append(Box((total_x / 2, depth / 2, height + WALL / 2), (total_x + 2 * WALL, depth + 2 * WALL, WALL), 0.0,
                     ceil_tex, 0.5, "ceiling"))
    for i, r in enumerate(rooms):
        wall_tex = pick("wall")
        w, d = r.x1 - r.x0, r.y1 - r.y0
        boxes.append(Box(((r.x0 + r.x1) / 2, r.y0 - WALL / 2, height / 2), (w, WALL, height), 0.0, wall_tex, 1.0, "wall"))
        boxes.append(Box(((r.x0 + r.x1) / 2, r.y1 + WALL / 2, height / 2), (w, WALL, height), 0.0, wall_tex, 1.0, "wall"))
        if i == 0:
            boxes.append(Box((r.x0 - WALL / 2, d / 2, height / 2), (WALL, d, height), 0.0, wall_tex, 1.0, "wall"))
        if i == len(rooms) - 1:
            boxes.append(Box((r.x1 + WALL / 2, d / 2, height / 2), (WALL, d, height), 0.0, wall_tex, 1.0, "wall"))
        else:  # partition with a door opening 1 m wide
            door_y = float(rng.uniform(1.0, d - 1.0))
            for y0, y1 in ((0.0, door_y - 0.5), (door_y + 0.5, d)):
                boxes.append(Box((r.x1, (y0 + y1) / 2, height / 2), (WALL, y1 - y0, height), 0.0, wall_tex, 1.0, "wall"))
            boxes.append(Box((r.x1, door_y, (2.1 + height) / 2), (WALL, 1.0, height - 2.1), 0.0, wall_tex, 1.0, "wall"))
        # posters on the long walls, facing into the room
        for side in (0, 1):
            for k in range(int(rng.integers(2, 4))):
                pw, ph = float(rng.uniform(0.5, 1.1)), float(rng.uniform(0.4, 0.9))
                px = float(rng.uniform(r.x0 + 0.3 + pw / 2, r.x1 - 0.3 - pw / 2))
                off = 0.01 + 0.004 * k  # overlapping posters hang one in front of the other
                y = r.y0 + off if side == 0 else r.y1 - off
                boxes.append(Box((px, y, float(rng.uniform(1.2, 1.9))), (pw, 0.02, ph), 0.0, pick("poster"),
                                 0.0, "poster"))
        # furniture along the walls, leaving the middle free for the camera paths
        for _ in range(int(rng.integers(3, 6))):
            kind = str(rng.choice(["table", "cabinet", "shelf"]))
            fw, fd = float(rng.uniform(0.6, 1.4)), float(rng.uniform(0.4, 0.8))
            fh = {"table": 0.75, "cabinet": float(rng.uniform(0.8, 1.2)), "shelf": float(rng.uniform(1.4, 2.0))}[kind]
            along = bool(rng.integers(0, 2))
            if along:
                cx = float(rng.uniform(r.x0 + fw / 2 + 0.1, r.x1 - fw / 2 - 0.1))
                cy = r.y0 + fd / 2 + 0.05 if rng.integers(0, 2) else r.y1 - fd / 2 - 0.05
                yaw = float(rng.normal(0, 0.08))
            else:
                cy = float(rng.uniform(r.y0 + fw / 2 + 0.1, r.y1 - fw / 2 - 0.1))
                cx = r.x0 + fd / 2 + 0.05 if rng.integers(0, 2) else r.x1 - fd / 2 - 0.05
                yaw = float(np.pi / 2 + rng.normal(0, 0.08))
            tex = pick("furniture")
            if kind == "table":
                boxes.append(Box((cx, cy, fh - 0.03), (fw, fd, 0.06), yaw, tex, 2.0, "table"))
                c, s = np.cos(yaw), np.sin(yaw)
                for lx, ly in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    ox, oy = lx * (fw / 2 - 0.05), ly * (fd / 2 - 0.05)
                    boxes.append(Box((cx + c * ox - s * oy, cy + s * ox + c * oy, (fh - 0.06) / 2), (0.05, 0.05, fh - 0.06),
                                     yaw, tex, 2.0, "leg"))
                boxes.append(Box((cx, cy, fh + 0.1), (0.3, 0.2, 0.2), yaw + float(rng.uniform(-0.5, 0.5)),
                                 pick("poster"), 0.0, "object"))
            else:
                boxes.append(Box((cx, cy, fh / 2), (fw, fd, fh), yaw, tex, 2.0, kind))
    light = (total_x / 2 + float(rng.normal(0, 0.5)), depth / 2 + float(rng.normal(0, 0.5)), height - 0.3)
    # lighting varies per scene: brightness of the ambient term and of the point light
    return Scene(seed, rooms, boxes, light, float(rng.uniform(0.4, 0.7)), float(rng.uniform(0.8, 1.5)))
