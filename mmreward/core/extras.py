"""Optional dependencies: which extra of ``pip install 'mmreward[...]'`` brings each package, and the one
clear error a missing one raises.

mmreward's core needs only torch, numpy, safetensors and tqdm; everything else comes with an extra
(pyproject.toml's ``[project.optional-dependencies]``, mirrored in :data:`PACKAGES`). A package a code path
imports that is not installed is one :class:`MissingExtraError` naming the extra to install, an
``ImportError`` in Python and one line with exit 2 from the CLI::

    from mmreward.core.extras import needs_extra, require

    require("transformers", extra="text", what="mmreward text train")  # before any work: nothing half-done
    with needs_extra("vision", what="reading images"):                  # turns a ModuleNotFoundError of a
        from PIL import Image                                            # known optional package into it
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
from typing import Iterator, Optional

# import name -> (distribution to pip install, extras that bring it; the first is named when nothing says
# which domain asked). Kept equal to pyproject.toml's extras by tests/test_user_install_extras.py; the
# packages marked "with X" come as dependencies of X (declared in those extras), not declared themselves.
PACKAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "transformers": ("transformers", ("text", "vision", "serve")),
    "tokenizers": ("tokenizers", ("text", "vision", "serve")),  # vision, serve: with transformers
    "huggingface_hub": ("huggingface_hub", ("text", "vision", "serve")),  # with transformers
    "datasets": ("datasets", ("text",)),
    "matplotlib": ("matplotlib", ("text", "vision", "robotics")),
    "tensorboard": ("tensorboard", ("text", "vision", "robotics")),
    "PIL": ("pillow", ("vision", "serve")),
    "cv2": ("opencv-python", ("vision", "robotics")),
    "diffusers": ("diffusers", ("vision",)),
    "jinja2": ("jinja2", ("text", "vision", "published")),
    "pyarrow": ("pyarrow", ("published",)),
    "gymnasium": ("gymnasium", ("robotics",)),
    "mujoco": ("mujoco", ("robotics",)),
    "metaworld": ("metaworld", ("robotics",)),
    "gymnasium_robotics": ("gymnasium-robotics", ("robotics",)),
    "imageio": ("imageio", ("robotics",)),
    "scipy": ("scipy", ("robotics",)),
    "fastapi": ("fastapi", ("serve",)),
    "starlette": ("starlette", ("serve",)),  # with fastapi
    "uvicorn": ("uvicorn", ("serve",)),
    "httpx": ("httpx", ("serve",)),
    "aiohttp": ("aiohttp", ("serve",)),
    "trl": ("trl", ("serve",)),
    "ray": ("ray[serve]", ("serve-ray",)),
    "triton": ("triton", ("triton",)),
}

# extras that include others (pyproject.toml: ``published = ["mmreward[vision]", ...]``)
INCLUDES: dict[str, tuple[str, ...]] = {"published": ("vision",), "serve-ray": ("serve",)}


def _brings(extra: Optional[str], top: str) -> bool:
    extras = PACKAGES.get(top, (None, ()))[1]
    return extra is not None and (extra in extras or any(_brings(e, top) for e in INCLUDES.get(extra, ())))

# where mmreward's own code lives -> the extra whose packages it imports (the most specific prefix first)
DOMAIN_EXTRAS = (("mmreward.vision.published.", "published"), ("mmreward.text.", "text"),
                 ("mmreward.vision.", "vision"), ("mmreward.robotics.", "robotics"),
                 ("mmreward.serve.ray", "serve-ray"), ("mmreward.serve.", "serve"), ("mmreward.ops.triton.", "triton"))


def extra_of_module(module: str) -> Optional[str]:
    """The extra of the mmreward module ``module`` (``mmreward.text.reward_model`` -> ``text``); None for
    core code and for modules outside mmreward."""
    return next((extra for prefix, extra in DOMAIN_EXTRAS if f"{module}.".startswith(prefix)), None)


class MissingExtraError(ModuleNotFoundError):
    """An optional package is not installed; the message names the extra that brings it. A
    ``ModuleNotFoundError`` (so an ``ImportError``), with ``name`` the missing module, ``package`` its
    distribution and ``extra`` the extra to install."""

    def __init__(self, module: str, extra: Optional[str] = None, what: Optional[str] = None) -> None:
        top = module.split(".")[0]
        package, extras = PACKAGES.get(top, (top, ()))
        self.package = package
        self.extra = extra or (extras[0] if extras else None)
        fix = f"pip install 'mmreward[{self.extra}]'" if self.extra else f"pip install {package}"
        text = f"{what} needs {package}, which is not installed" if what else f"{package} is not installed"
        super().__init__(f"{text}: {fix}", name=top)
        self._init = (module, extra, what)

    def __reduce__(self):  # pickled across processes (Ray replicas, DataLoader workers): rebuilt from its arguments
        return type(self), self._init


def installed(module: str) -> bool:
    """Whether ``import module`` can find it (without importing it; a module set to None in
    ``sys.modules``, as tests block one, counts as missing)."""
    top = module.split(".")[0]
    if top in sys.modules:
        return sys.modules[top] is not None
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def extra_for(module: str, prefer: Optional[str] = None) -> Optional[str]:
    """The extra to name for a missing ``module``: ``prefer`` (the extra of the command or model that asked)
    when it brings the package, else the first that does; None for a package no extra brings."""
    top = module.split(".")[0]
    extras = PACKAGES.get(top, (None, ()))[1]
    if _brings(prefer, top):
        return prefer
    return extras[0] if extras else None


def missing_extra(error: BaseException, extra: Optional[str] = None,
                  what: Optional[str] = None) -> Optional[MissingExtraError]:
    """``error`` as a :class:`MissingExtraError` when it says a known optional package is not installed
    (``extra``: the extra to name when it brings that package); the error itself when it already is one; None
    for anything else — a module missing *inside* an installed package (an old version) is not a missing
    extra, and neither is a module of mmreward itself."""
    if isinstance(error, MissingExtraError):
        return error
    if isinstance(error, ImportError) and not isinstance(error, ModuleNotFoundError) \
            and isinstance(error.__cause__, ModuleNotFoundError) and "pip install 'mmreward[" not in str(error):
        # "video I/O needs OpenCV: pip install opencv-python" raised from the missing cv2: name the extra
        return missing_extra(error.__cause__, extra, what)
    name = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or not isinstance(name, str) or not name:
        return None
    top = name.split(".")[0]
    if top not in PACKAGES or (name != top and installed(top)):
        return None
    return MissingExtraError(top, extra_for(top, extra), what)


@contextlib.contextmanager
def needs_extra(extra: Optional[str] = None, what: Optional[str] = None) -> Iterator[None]:
    """Inside the block, a known optional package that is not installed raises :class:`MissingExtraError`
    (naming ``extra`` when it brings the package) instead of Python's bare ``No module named 'x'``."""
    try:
        yield
    except ModuleNotFoundError as e:
        err = missing_extra(e, extra, what)
        if err is None or err is e:
            raise
        raise err from e


def require(*modules: str, extra: Optional[str] = None, what: Optional[str] = None) -> None:
    """Raise :class:`MissingExtraError` for the first of ``modules`` that is not installed, before any
    work (nothing is imported here, so this is cheap enough to run before every command)."""
    for module in modules:
        if not installed(module):
            raise MissingExtraError(module, extra_for(module, extra), what)


__all__ = ["DOMAIN_EXTRAS", "INCLUDES", "MissingExtraError", "PACKAGES", "extra_for", "extra_of_module", "installed",
           "missing_extra", "needs_extra", "require"]
