"""`train.gramian_precision`: the weighted mask's Gramian products in bfloat16, and when `auto` takes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cfrec.models.losses import WeightedCells
from cfrec.precision import (
    AUTO_MIN_ENTRIES,
    choose_dtype,
    cpu_has_native_bf16,
    gramian_dtype,
    gramian_precision,
)
from cfrec.train.sparse import table_rows


def weighted_terms(w0: float, ridge: float, precision: str | None = None):
    """WeightedCells' (data, ridge) and gradients on a float32 problem of 60 users × 40 items, rank 8."""
    gen = torch.Generator().manual_seed(5)
    theta = torch.randn(60, 8, generator=gen).requires_grad_()
    x = torch.randn(40, 8, generator=gen).requires_grad_()
    cells = torch.randperm(2400, generator=gen)[:500]
    users, items = cells // 40, cells % 40
    values = torch.rand(500, generator=gen) * 4 + 1
    d, e = (torch.full((8,), ridge) for _ in range(2))
    pattern = table_rows(users, items, None, None, 0.5, 60, 40)

    def run():
        data, reg = WeightedCells.apply(theta, x, values[pattern.order], pattern, w0, 0.5, d, e)
        return (data.detach(), reg.detach(), *torch.autograd.grad(data + reg, (theta, x)))

    if precision is None:
        return run()
    with gramian_precision(precision):
        return run()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_bfloat16_gramians_stay_within_bfloat16_rounding_of_the_full_ones() -> None:
    full = weighted_terms(0.3, 0.7)
    low = weighted_terms(0.3, 0.7, "bfloat16")
    for got, want in zip(low, full):
        assert got.dtype == torch.float32
        assert 0 < relative_error(got, want) < 2**-7  # rounded (so bfloat16 ran), by no more than a few ulps
    assert all(torch.equal(a, b) for a, b in zip(weighted_terms(0.3, 0.7, "full"), full))


def test_bfloat16_touches_only_the_gramian_products() -> None:
    """Without unrated cells and without a ridge no Gramian reaches the loss: bit-identical results."""
    full, low = weighted_terms(0.0, 0.0), weighted_terms(0.0, 0.0, "bfloat16")
    assert all(torch.equal(a, b) for a, b in zip(low, full))


def test_outside_a_policy_block_the_products_keep_the_tables_precision() -> None:
    assert gramian_dtype(10 * AUTO_MIN_ENTRIES, torch.device("cpu"), torch.float64) == torch.float64
    with gramian_precision("bfloat16"):
        with gramian_precision("full"):
            assert gramian_dtype(10, torch.device("cpu"), torch.float32) == torch.float32
        assert gramian_dtype(10, torch.device("cpu"), torch.float32) == torch.bfloat16
    assert gramian_dtype(10, torch.device("cpu"), torch.float32) == torch.float32


@pytest.mark.parametrize(
    "name, entries, native, want",
    [
        ("auto", AUTO_MIN_ENTRIES, True, torch.bfloat16),
        ("auto", AUTO_MIN_ENTRIES - 1, True, torch.float32),  # ML-1M-sized tables stay full
        ("auto", 100 * AUTO_MIN_ENTRIES, False, torch.float32),  # no native bfloat16: emulated, slower
        ("full", 100 * AUTO_MIN_ENTRIES, True, torch.float32),
        ("bfloat16", 10, False, torch.bfloat16),
    ],
)
def test_the_auto_rule(name: str, entries: int, native: bool, want: torch.dtype) -> None:
    assert choose_dtype(name, entries, native, torch.float32) == want


def test_an_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'half'"):
        with gramian_precision("half"):
            pass


@pytest.mark.parametrize(
    "text, native",
    [
        ("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx2\n", True),
        ("processor\t: 0\nflags\t\t: fpu amx_bf16 amx_tile\n", True),
        ("processor\t: 0\nflags\t\t: fpu avx512f avx512bw avx2\n", False),  # AVX-512 without bfloat16
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm
        ("processor\t: 0\nFeatures\t: fp asimd\n", False),
    ],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path, text: str, native: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert cpu_has_native_bf16.__wrapped__(cpuinfo) is native
    assert cpu_has_native_bf16.__wrapped__(tmp_path / "missing") is False
