"""Image stamps as the decimal strings TUM files use, converted to and from ROS (sec, nanosec) exactly — never
through a float, which cannot hold nanoseconds at Unix-epoch magnitudes."""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

_NS = 10**9


def stamp_to_sec_nanosec(stamp: str) -> tuple[int, int]:
    """'1305031229.528748' -> (1305031229, 528748000), exactly (decimal arithmetic, never a float)."""
    try:
        d = Decimal(str(stamp).strip())
    except InvalidOperation:
        raise ValueError(f"frame stamp {stamp!r} is not a decimal number of seconds") from None
    if not d.is_finite() or d < 0:
        raise ValueError(f"frame stamp {stamp!r} must be a finite, non-negative number of seconds")
    sec, nanosec = divmod(int((d * _NS).to_integral_value(ROUND_HALF_EVEN)), _NS)
    if sec >= 2**31:
        raise ValueError(f"frame stamp {stamp!r} does not fit builtin_interfaces/Time (int32 seconds)")
    return sec, nanosec


def stamp_from_sec_nanosec(sec: int, nanosec: int) -> str:
    """(1305031229, 528748000) -> '1305031229.528748'; nine decimals unless the stamp is whole microseconds."""
    text = f"{int(sec)}.{int(nanosec):09d}"
    return text[:-3] if nanosec % 1000 == 0 else text
