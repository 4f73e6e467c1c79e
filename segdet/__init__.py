"""segdet: Mask R-CNN instance segmentation with C++/CUDA kernels for PyTorch."""
from ._extension import load_extension as _load_extension

_C = _load_extension()

__version__ = "0.1.0"
