"""Loading of the compiled extension ``segdet._C`` with an actionable error when it is missing."""
import importlib

BUILD_COMMAND = "pip install --no-build-isolation -e .   (from the segdet checkout; FORCE_CUDA=1 for GPU kernels)"


def load_extension():
    import torch  # noqa: F401  (libtorch must be loaded before the extension)

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
