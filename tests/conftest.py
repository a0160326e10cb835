"""Fixtures shared by test modules."""

import pytest

from biomol_nnp.train.trainer import torch_threads


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on a shared machine: one thread is both what MD uses and far faster under contention.

    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    with torch_threads(1):
        yield
