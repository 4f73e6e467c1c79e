"""Pure-PyTorch reference implementations of segdet's ops: the test oracle.

Written for obviousness, not speed: plain loops and textbook formulas, float64 where it helps.
Each op's section is kept together; tests import from here.
"""
import math

import torch

# ---- roi_align ---------------------------------------------------------------------------------

# ---- nms / batched_nms -------------------------------------------------------------------------

# ---- decode_boxes ------------------------------------------------------------------------------
