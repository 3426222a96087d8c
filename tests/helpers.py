"""Shared assertions for op tests: tolerances from the op spec."""
import torch

TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=1e-5, rtol=5e-4),
    torch.bfloat16: dict(atol=5e-3, rtol=5e-3),
    torch.float16: dict(atol=1e-3, rtol=1e-3),
}


def assert_close(actual, expected, dtype, *, scale=1.0, msg=""):
    """Compare in float64; `dtype` is the *input* dtype and picks the tolerance.
    `scale` widens tolerances for quantities accumulated over many terms."""
    tol = TOL[dtype]
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=tol["atol"] * scale, rtol=tol["rtol"] * scale, msg=msg or None
    )
