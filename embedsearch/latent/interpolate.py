"""Paths between two vectors: linear (``lerp``) and spherical (``slerp``) interpolation.

Embeddings of this library are unit vectors, so the natural path between two meanings is
the great-circle arc: :func:`slerp` moves along it at constant angular speed and every point
it returns is a unit vector. :func:`lerp` is the straight chord (its midpoints are shorter
than 1; a collection normalises queries, so for search only the direction matters).

``slerp`` is computed with the ``atan2`` form of the angle and a re-orthogonalised tangent
direction, which keeps it exact for nearly parallel inputs (where ``1/sin(angle)`` would
blow up) and defined for antipodal ones (where the arc is not unique: a fixed, deterministic
perpendicular direction is chosen).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidInputError

_PARALLEL_EPS = 1e-12  # |perpendicular component| below this: the inputs are (anti)parallel


def _as_vector(v: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be a 1-D array of numbers ({exc}).") from exc
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise InvalidInputError(f"{what} must be a non-empty 1-D vector, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"{what} contains NaN or infinity.")
    return arr


def _as_t(t: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(t, dtype=np.float64)
    if arr.ndim > 1:
        raise InvalidInputError(
            f"t must be a number or a 1-D sequence of numbers, got {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise InvalidInputError("t contains NaN or infinity.")
    return np.atleast_1d(arr), arr.ndim == 0


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    dtype = np.result_type(np.asarray(a).dtype, np.asarray(b).dtype, np.float32)
    va, vb = _as_vector(a, "a"), _as_vector(b, "b")
    if va.shape != vb.shape:
        raise InvalidInputError(f"a and b have different shapes: {va.shape} vs {vb.shape}.")
    return va, vb, dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def lerp(a: Any, b: Any, t: float | Any) -> np.ndarray:
    """Linear interpolation ``(1 - t) * a + t * b``.

    ``t`` outside [0, 1] is allowed and extrapolates along the line (``t = 1.5`` goes half
    the distance again beyond ``b``), which is sometimes what one wants for "more of the
    same direction". The result is not normalised.

    Args:
        a, b: vectors of the same length.
        t: a number, or a 1-D sequence of numbers for several points at once.

    Returns:
        A vector (scalar ``t``) or an array of shape ``(len(t), dim)``: float32 when both
        inputs are float32 arrays, float64 otherwise.

    Example:
        >>> lerp([1.0, 0.0], [0.0, 1.0], 0.5)
        array([0.5, 0.5])
    """
    va, vb, dtype = _pair(a, b)
    ts, scalar = _as_t(t)
    out = (1.0 - ts)[:, None] * va[None, :] + ts[:, None] * vb[None, :]
    out = out.astype(dtype)
    return out[0] if scalar else out


def _perpendicular_to(v: np.ndarray) -> np.ndarray:
    """A deterministic unit vector orthogonal to unit ``v`` (for the antipodal case)."""
    e = np.zeros_like(v)
    e[int(np.argmin(np.abs(v)))] = 1.0  # the axis least aligned with v
    p = e - (e @ v) * v
    return p / np.linalg.norm(p)


def slerp(a: Any, b: Any, t: float | Any) -> np.ndarray:
    """Spherical linear interpolation on the unit sphere, at constant angular speed.

    The inputs are normalised first (their lengths are ignored); every returned point is a
    unit vector at angle ``t * angle(a, b)`` from ``a`` on the great circle through ``b``.
    Nearly parallel inputs give the (exact) limit; for exactly opposite inputs, where every
    great circle through both qualifies, a fixed perpendicular direction is used.

    Args:
        a, b: non-zero vectors of the same length.
        t: a number in [0, 1] or a 1-D sequence of them (extrapolating around the sphere is
            not offered: use :func:`lerp` for that).

    Returns:
        A unit vector (scalar ``t``) or an array of shape ``(len(t), dim)``.

    Raises:
        InvalidInputError: zero or non-finite vectors, mismatched shapes, t outside [0, 1].

    Example:
        >>> slerp([1.0, 0.0], [0.0, 1.0], 0.5)
        array([0.70710678, 0.70710678])
    """
    va, vb, dtype = _pair(a, b)
    ts, scalar = _as_t(t)
    if np.any(ts < 0.0) or np.any(ts > 1.0):
        raise InvalidInputError(
            "slerp needs t in [0, 1]; use lerp to extrapolate beyond the endpoints."
        )
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0.0 or nb == 0.0 or not (math.isfinite(na) and math.isfinite(nb)):
        raise InvalidInputError("slerp needs non-zero vectors: a zero vector has no direction.")
    ua, ub = va / na, vb / nb
    cos = float(np.clip(ua @ ub, -1.0, 1.0))
    perp = ub - cos * ua
    perp -= (perp @ ua) * ua  # re-orthogonalise: cancellation leaves a bit of ua behind
    sin = float(np.linalg.norm(perp))
    if sin > _PARALLEL_EPS:
        direction = perp / sin
    elif cos > 0:  # identical directions: the path is the point itself
        direction = np.zeros_like(ua)
    else:  # antipodal: any perpendicular great circle works; pick a deterministic one
        direction = _perpendicular_to(ua)
        sin = 0.0
    angle = math.atan2(sin, cos)
    theta = ts * angle
    out = np.cos(theta)[:, None] * ua[None, :] + np.sin(theta)[:, None] * direction[None, :]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out = out.astype(dtype)
    return out[0] if scalar else out


def angle(a: Any, b: Any) -> float:
    """The angle between two non-zero vectors, in radians (accurate for tiny angles too)."""
    va, vb, _ = _pair(a, b)
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0.0 or nb == 0.0:
        raise InvalidInputError("the angle with a zero vector is undefined.")
    ua, ub = va / na, vb / nb
    return math.atan2(float(np.linalg.norm(ub - (ua @ ub) * ua)), float(ua @ ub))


__all__ = ["angle", "lerp", "slerp"]
