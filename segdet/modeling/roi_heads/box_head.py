"""Box head: turns pooled RoI features into one feature vector per RoI."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FastRCNNFCHead(nn.Module):
    """Flatten, then fully connected layers with ReLU (the "2fc" head: 2 x FC-1024 by default).

    Args:
        input_shape: (C, oh, ow) of the pooled features.
        fc_dims: widths of the FC layers.
    Input Tensor[K, C, oh, ow] -> output Tensor[K, fc_dims[-1]].
    """

    def __init__(self, *, input_shape: Sequence[int], fc_dims: Sequence[int] = (1024, 1024)):
        super().__init__()
        if len(fc_dims) == 0:
            raise ValueError("fc_dims must list at least one layer width")
        in_features = 1
        for v in input_shape:
            in_features *= int(v)
        layers = []
        for dim in fc_dims:
            fc = nn.Linear(in_features, int(dim))
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.constant_(fc.bias, 0.0)
            layers += [fc, nn.ReLU(inplace=True)]
            in_features = int(dim)
        self.fcs = nn.Sequential(*layers)
        self.output_size = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fcs(x.flatten(1))
