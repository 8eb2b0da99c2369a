"""Shared fixtures: tiny random configs and a locally built tokenizer. Nothing here touches the network."""

import pytest
import torch

from tests.tiny import tiny_config, tiny_tokenizer


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()
