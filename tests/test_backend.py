import warnings

import pytest
import torch

from mmreward.ops import _backend
from mmreward.ops._backend import BackendUnavailableError, use_backend

CPU = torch.device("cpu")


def test_unknown_backend_env_is_an_error(monkeypatch):
    monkeypatch.setenv("MMREWARD_BACKEND", "fast")
    with pytest.raises(ValueError, match="not one of"):
        _backend.select("ext_info", CPU)


def test_use_backend_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown backend"):
        with use_backend("gpu"):
            pass


def test_forced_unavailable_backend_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setenv("MMREWARD_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        _backend.select("ext_info", CPU)
    # an op without any C++ kernel cannot be forced onto cpp either
    monkeypatch.setenv("MMREWARD_BACKEND", "cpp")
    with pytest.raises(BackendUnavailableError, match="no CPU kernel"):
        _backend.select("no_such_op", CPU)


def test_context_manager_overrides_env(monkeypatch):
    monkeypatch.setenv("MMREWARD_BACKEND", "cuda")
    with use_backend("reference"):
        assert _backend.select("ext_info", CPU) == "reference"


def test_missing_kernel_falls_back_to_reference_with_one_warning(monkeypatch):
    monkeypatch.delenv("MMREWARD_BACKEND", raising=False)
    monkeypatch.setattr(_backend, "_warned_fallback", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _backend.select("no_such_op", CPU) == "reference"
        assert _backend.select("no_such_op", CPU) == "reference"
    msgs = [str(w.message) for w in caught if "reference" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "env_report" in msgs[0]


def test_triton_needs_cuda_or_interpreter(monkeypatch):
    if not _backend.triton_installed():
        pytest.skip("triton not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "CUDA" in _backend.why_unavailable("triton", "ext_info", "cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _backend.why_unavailable("triton", "ext_info", "cpu") is None


def test_available_backends_are_honest_without_a_gpu(monkeypatch):
    """Regression: `mmreward ops --device cuda` listed cuda / triton as live on a CPU-only torch."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _backend.available_backends("pairwise_loss", "cuda") == []
    assert _backend.available_backends("pairwise_loss", torch.device("cuda")) == []
    assert "no CUDA device" in _backend.why_unavailable("triton", "pairwise_loss", "cuda")
    assert "reference" in _backend.available_backends("pairwise_loss", "cpu")


def test_triton_needs_the_compiled_extension(monkeypatch):
    if not _backend.triton_installed():
        pytest.skip("triton not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(_backend, "extension_loaded", lambda: False)
    assert "extension" in _backend.why_unavailable("triton", "pairwise_loss", "cpu")


def test_meta_tensors_select_the_fake_kernels(monkeypatch):
    if not _backend.extension_loaded():
        pytest.skip(_backend.extension_error())
    meta = torch.device("meta")
    assert _backend.select("pairwise_loss", meta) == "cpp"
    monkeypatch.setenv("MMREWARD_BACKEND", "triton")  # a forced backend does not matter for shapes
    assert _backend.select("pairwise_loss", meta) == "cpp"
    assert _backend.select("no_such_op", meta) == "reference"
