"""Loading of the compiled extension ``segdet._C`` with an actionable error when it is missing or was built
for another torch."""
import importlib

BUILD_COMMAND = "pip install --no-build-isolation -e .   (from the segdet checkout; FORCE_CUDA=1 for GPU kernels)"


def _release(version: str) -> str:
    return version.split("+")[0]


def check_torch_version(running: str, built: str | None) -> None:
    """ImportError when the running torch's release differs from the one the extension was compiled against
    (the C++ ABI of libtorch changes between releases; a mismatch fails later with undefined symbols or
    crashes). ``built`` None (an extension built before the build info existed) is not checked."""
    if built is None or _release(running) == _release(built):
        return
    raise ImportError(
        f"segdet was built for torch {built} but torch {running} is installed. Install torch=={_release(built)} "
        f"or rebuild segdet against this torch: {BUILD_COMMAND}"
    )


def built_torch_version() -> "str | None":
    try:
        from segdet import _build_info
    except ImportError:
        return None
    return _build_info.TORCH_VERSION


def load_extension():
    import torch  # libtorch must be loaded before the extension

    check_torch_version(torch.__version__, built_torch_version())
    try:
        return importlib.import_module("segdet._C")
    except ImportError as exc:
        raise ImportError(
            f"segdet's compiled extension segdet._C could not be imported ({exc}). "
            f"Build it with: {BUILD_COMMAND}"
        ) from exc


def cuda_built() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return bool(importlib.import_module("segdet._C").with_cuda())
