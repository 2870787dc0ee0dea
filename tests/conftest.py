"""Shared fixtures: tiny models and a synthetic class-incremental benchmark (no files, no downloads)."""
import socket

import pytest
import torch

from avalanche_lpa.data import synthetic_benchmark
from avalanche_lpa.models import LocalityViT

# Tiny models: one thread avoids thread-pool overhead that dominates at this size and keeps runs repeatable.
torch.set_num_threads(1)

TINY = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=18, depth=2, num_heads=9, drop_path_rate=0.0)


def make_tiny(attn_type: str = "lpa", **overrides) -> LocalityViT:
    """A ~12k-parameter LocalityViT on 8x8 single-channel images (4x4 patch grid)."""
    return LocalityViT(attn_type=attn_type, **{**TINY, **overrides})


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Skips the tests marked ``cuda`` where no CUDA GPU is visible, so CPU runs (tox, CI) stay green."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU, and torch.cuda.is_available() is False here")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def cil_benchmark():
    """3 experiences x 2 classes of 8x8 single-channel images."""
    return synthetic_benchmark(n_experiences=3, classes_per_experience=2, img_size=8, in_chans=1)


@pytest.fixture
def blocked_network(monkeypatch):
    """Every attempt to open a connection is refused with an ``OSError``; the fixture's value lists the attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts
