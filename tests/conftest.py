"""Shared fixtures: small synthetic data sets (no file outside the repository is needed)."""

from __future__ import annotations

import pytest
import torch

from cfrec.data import Split, SyntheticData, per_user_split, synthetic


# Tiny tensors gain nothing from a second thread, and on a busy machine OpenMP threads wait on
# each other: one thread keeps the suite fast and steady.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small() -> SyntheticData:
    """300 users × 200 items, 12,000 integer ratings with planted rank-4 structure."""
    return synthetic(n_users=300, n_items=200, n_ratings=12_000, rank=4, seed=7)


@pytest.fixture(scope="session")
def small_split(small: SyntheticData) -> Split:
    return per_user_split(small.ratings, test_ratio=0.2, seed=1)
