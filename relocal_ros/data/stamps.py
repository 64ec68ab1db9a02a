"""Image stamps as the decimal strings TUM files use, converted to and from ROS (sec, nanosec) exactly — never
through a float, which cannot hold nanoseconds at Unix-epoch magnitudes."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation


def stamp_to_str(sec: int, nanosec: int) -> str:
    if nanosec % 1000 == 0:  # microsecond stamps (TUM, most drivers) keep their 6-decimal spelling
        return f"{int(sec)}.{int(nanosec) // 1000:06d}"
    return f"{int(sec)}.{int(nanosec):09d}"


def str_to_stamp(stamp: str) -> tuple[int, int]:
    try:
        d = Decimal(str(stamp).strip())
    except InvalidOperation as e:
        raise ValueError(f"not a timestamp: {stamp!r}") from e
    if not d.is_finite() or d < 0:
        raise ValueError(f"not a valid ROS time: {stamp!r}")
    ns = int((d * 1_000_000_000).to_integral_value())
    return ns // 1_000_000_000, ns % 1_000_000_000


def str_to_nanoseconds(stamp: str) -> int:
    sec, nsec = str_to_stamp(stamp)
    return sec * 1_000_000_000 + nsec
