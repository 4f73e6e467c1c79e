"""segdet: Mask R-CNN instance segmentation with C++/CUDA kernels for PyTorch."""
from ._extension import load_extension as _load_extension

_C = _load_extension()


def _version() -> str:
    # The built version carries the torch/CUDA build as its local tag (setup.py); a source tree without a
    # build info file reports the base version.
    try:
        from ._build_info import VERSION
    except ImportError:
        return "0.1.0"
    return VERSION


__version__ = _version()
