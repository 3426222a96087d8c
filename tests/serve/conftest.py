"""Fixtures of the serve tests: toy models and in-process servers on 127.0.0.1 (a free port each)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # serve_toys, for Ray workers and subprocesses too

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install mmreward[serve])")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install mmreward[serve])")
pytest.importorskip("httpx", reason="the serve extra is not installed (pip install mmreward[serve])")
pytest.importorskip("PIL", reason="the serve extra is not installed (pip install mmreward[serve])")

from serve_toys import ToyConfig, ToyEpisodeScorer, ToyImageScorer, ToyStepScorer, ToyTextScorer  # noqa: E402

from mmreward.serve.app import BackgroundServer  # noqa: E402
from mmreward.serve.config import ServeConfig  # noqa: E402


@pytest.fixture
def start_server():
    """``start_server(model, **ServeConfig fields) -> url``; every server stops at teardown."""
    servers = []

    def start(model, **overrides):
        server = BackgroundServer(model, ServeConfig(port=0, **overrides))
        servers.append(server)
        return server.start()

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def text_model():
    return ToyTextScorer()


@pytest.fixture
def step_model():
    return ToyStepScorer()


@pytest.fixture
def image_model():
    return ToyImageScorer()


@pytest.fixture
def episode_model():
    return ToyEpisodeScorer()


@pytest.fixture
def slow_text_model():
    return ToyTextScorer(ToyConfig(delay_s=0.3))
