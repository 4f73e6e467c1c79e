"""Datasets (COCO format, synthetic shapes), joint image/target transforms, samplers and loaders."""
from .build import (DetectionData, SplitFiles, TrainLoader, build_dataset, build_test_loader, build_train_loader,
                    collate_list)
from .coco import COCODataset, COCOFormatError, load_coco_json
from .samplers import InferenceSampler, TrainingBatchSampler
from .shapes import ensure_shapes_dataset
from .transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge, build_transforms

__all__ = [
    "COCODataset", "COCOFormatError", "Compose", "DetectionData", "InferenceSampler", "RandomHorizontalFlip",
    "ResizeShortestEdge", "SplitFiles", "TrainLoader", "TrainingBatchSampler", "build_dataset", "build_test_loader",
    "build_train_loader", "build_transforms", "collate_list", "ensure_shapes_dataset", "load_coco_json",
]
