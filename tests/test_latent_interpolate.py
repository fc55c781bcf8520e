"""lerp / slerp: exact on the sphere, stable near parallel and antipodal inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedsearch.errors import InvalidInputError
from embedsearch.latent.interpolate import angle, lerp, slerp


def unit(rng: np.random.Generator, dim: int = 64) -> np.ndarray:
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def textbook_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    om = math.acos(float(np.clip(a @ b, -1, 1)))
    return (math.sin((1 - t) * om) * a + math.sin(t * om) * b) / math.sin(om)


def test_lerp_values_extrapolation_and_shapes() -> None:
    a = np.array([1.0, 0.0], dtype=np.float32)
    b = np.array([0.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(lerp(a, b, 0.25), [0.75, 0.25])
    np.testing.assert_allclose(lerp(a, b, 1.5), [-0.5, 1.5])  # documented extrapolation
    out = lerp(a, b, [0.0, 0.5, 1.0])
    assert out.shape == (3, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], a)
    np.testing.assert_allclose(out[2], b)


def test_slerp_endpoints_unit_norm_and_constant_angular_speed() -> None:
    rng = np.random.default_rng(0)
    a, b = unit(rng), unit(rng)
    ts = np.linspace(0, 1, 9)
    pts = slerp(a, b, ts)
    assert pts.dtype == np.float32
    np.testing.assert_allclose(pts[0], a, atol=1e-6)
    np.testing.assert_allclose(pts[-1], b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-6)
    total = angle(a, b)
    np.testing.assert_allclose([angle(a, p) for p in pts], ts * total, atol=1e-5)
    for t in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(slerp(a, b, t), textbook_slerp(a, b, t), atol=1e-6)


def test_slerp_ignores_input_lengths() -> None:
    rng = np.random.default_rng(1)
    a, b = unit(rng), unit(rng)
    np.testing.assert_allclose(slerp(3 * a, 0.2 * b, 0.3), slerp(a, b, 0.3), atol=1e-6)


def test_slerp_nearly_parallel_inputs_are_stable() -> None:
    rng = np.random.default_rng(2)
    a = unit(rng).astype(np.float64)
    for eps in (1e-3, 1e-6, 1e-9, 1e-13, 0.0):
        b = a + eps * unit(rng)
        pts = slerp(a, b, np.linspace(0, 1, 5))
        assert np.all(np.isfinite(pts))
        np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(pts[-1], b / np.linalg.norm(b), atol=1e-9)
        # the midpoint is between the two (angle halves)
        assert angle(a, pts[2]) == pytest.approx(angle(a, b) / 2, abs=1e-9)


def test_slerp_antipodal_inputs_follow_a_deterministic_great_circle() -> None:
    rng = np.random.default_rng(3)
    a = unit(rng).astype(np.float64)
    ts = np.linspace(0, 1, 5)
    pts = slerp(a, -a, ts)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose([angle(a, p) for p in pts], ts * math.pi, atol=1e-7)
    assert abs(pts[2] @ a) < 1e-12  # halfway is perpendicular
    np.testing.assert_array_equal(pts, slerp(a, -a, ts))  # same answer every time
    near = slerp(a, -a + 1e-14 * unit(rng), ts)
    np.testing.assert_allclose(np.linalg.norm(near, axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize("t", [-0.1, 1.0001, [0.5, 2.0]])
def test_slerp_refuses_t_outside_unit_interval(t: object) -> None:
    with pytest.raises(InvalidInputError, match="lerp"):
        slerp([1.0, 0.0], [0.0, 1.0], t)


@pytest.mark.parametrize(
    ("a", "b", "fragment"),
    [
        ([0.0, 0.0], [0.0, 1.0], "zero"),
        ([1.0, 0.0], [1.0, 0.0, 0.0], "shapes"),
        ([np.nan, 0.0], [0.0, 1.0], "NaN"),
        ([], [], "non-empty"),
    ],
)
def test_bad_vectors(a: list[float], b: list[float], fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        slerp(a, b, 0.5)


def test_lerp_rejects_non_finite_t() -> None:
    with pytest.raises(InvalidInputError, match="NaN"):
        lerp([1.0, 0.0], [0.0, 1.0], float("nan"))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=-1.0, max_value=1.0),
)
def test_slerp_point_lies_on_the_arc(seed: int, t: float, mix: float) -> None:
    rng = np.random.default_rng(seed)
    a = unit(rng, 8).astype(np.float64)
    b = mix * a + unit(rng, 8)  # any angle, including small ones
    if np.linalg.norm(b) < 1e-6:
        return
    p = slerp(a, b, t)
    assert np.linalg.norm(p) == pytest.approx(1.0, abs=1e-12)
    total = angle(a, b)
    assert angle(a, p) + angle(p, b) == pytest.approx(total, abs=1e-7)
    assert angle(a, p) == pytest.approx(t * total, abs=1e-7)
