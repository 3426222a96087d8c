"""``--device`` / ``dtype=`` requests: what this machine can do, or one error saying what to use."""
import pytest
import torch

from mmreward.core.device import DeviceError, resolve_device, resolve_dtype


@pytest.mark.parametrize("spec", ["cpu", "CPU", " Cpu ", torch.device("cpu")])
def test_cpu_in_any_case(spec):
    assert resolve_device(spec) == torch.device("cpu")


def test_auto_and_none_pick_what_is_usable():
    want = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device("AUTO") == resolve_device(None) == want


@pytest.mark.parametrize("spec, message", [("gpu", "unknown device 'gpu'"), ("cpu:x", "unknown device"),
                                           ("xla", "not supported")])
def test_unknown_devices_say_what_to_use(spec, message):
    with pytest.raises(DeviceError, match=message):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_cuda_without_a_gpu_says_to_use_cpu():
    with pytest.raises(DeviceError, match=r"use cpu \(--device cpu, or device=\"cpu\" in Python\)"):
        resolve_device("CUDA:0")
    with pytest.raises(DeviceError, match=r"use cpu \(--device cpu, or device=\"cpu\" in Python\)"):
        resolve_device(0)  # torch reads a bare index as a CUDA device


@pytest.mark.parametrize("spec, dtype", [("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16),
                                         ("torch.float16", torch.float16), (torch.float32, torch.float32), (None, None),
                                         ("double", torch.float64), ("auto", None)])
def test_dtype_names(spec, dtype):
    assert resolve_dtype(spec) == dtype


@pytest.mark.parametrize("spec", ["int8", torch.int64, "fp8"])
def test_non_float_dtypes_are_refused(spec):
    with pytest.raises(DeviceError):
        resolve_dtype(spec)
