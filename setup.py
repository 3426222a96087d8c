"""Build script: packages + the `mmreward._C` extension (C++ always, CUDA when torch has it).

    pip install --no-build-isolation .          # or -e . for development
    MMREWARD_SKIP_EXT=1 pip install .           # pure Python: reference ops only
    MMREWARD_NO_CUDA=1                          # CPU kernels only, even with a CUDA torch
    MMREWARD_CPU_ARCH=native|<march>|none       # -march for the C++ kernels (default: native)

`--no-build-isolation` lets the build use the torch already installed (an isolated build would
fetch another torch and compile against the wrong ABI).
"""
import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# Domain packages live at the top level of the repository but install under `mmreward.`.
TOP = {"mmreward": "mmreward", "mmreward.text": "text", "mmreward.vision": "vision", "mmreward.robotics": "robotics"}


def package_dirs():
    dirs = {}
    for name, folder in TOP.items():
        dirs[name] = folder
        for sub in find_packages(folder):
            dirs[f"{name}.{sub}"] = os.path.join(folder, *sub.split("."))
    return dirs


def extensions():
    if os.environ.get("MMREWARD_SKIP_EXT") == "1":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as e:
        raise RuntimeError(
            "Building mmreward._C needs torch installed first: `pip install torch==2.13.0` then "
            "`pip install --no-build-isolation .` (or set MMREWARD_SKIP_EXT=1 for a pure-Python install)"
        ) from e

    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = rel("csrc/bindings.cpp") + rel("csrc/cpu/*.cpp")
    cxx = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno"]
    # The extension is compiled on the machine that runs it, so tune for its CPU by default
    # (AVX2 / AVX-512 vectorisation of the streaming kernels). MMREWARD_CPU_ARCH=x86-64-v2 (or any
    # -march value) for a portable build; MMREWARD_CPU_ARCH=none adds no -march flag.
    arch = os.environ.get("MMREWARD_CPU_ARCH", "native")
    if arch != "none":
        cxx.append(f"-march={arch}")
    macros = []
    with_cuda = (
        torch.version.cuda is not None and CUDA_HOME is not None and os.environ.get("MMREWARD_NO_CUDA") != "1"
    )
    kwargs = dict(
        include_dirs=[os.path.join(ROOT, "csrc", "include")],
        extra_link_args=["-fopenmp"],
    )
    if with_cuda:
        sources += rel("csrc/cuda/*.cu")
        macros.append(("MMREWARD_WITH_CUDA", None))
        ext = CUDAExtension(
            "mmreward._C", sources, define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++20"]}, **kwargs,
        )
    else:
        ext = CppExtension("mmreward._C", sources, define_macros=macros, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = extensions()
dirs = package_dirs()
setup(packages=sorted(dirs), package_dir=dirs, ext_modules=ext_modules, cmdclass=cmdclass)
