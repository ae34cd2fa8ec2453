"""Kedro datasets for kedro-edge artifacts; every save goes to a temporary name, then is renamed.

Local files only: a crash mid-write leaves the previous good artifact in place.
"""

from kedro_edge.io.arrays import DigitsDataset, GlyphsDataset, ImageNpzDataset, NpzDataset
from kedro_edge.io.fleet import FleetDataset, ModelFile, ModelFileDataset
from kedro_edge.io.image_folder import ImageFolderDataset
from kedro_edge.io.model_input import ModelInputDataset
from kedro_edge.io.models import OnnxModelDataset, TorchModuleDataset
from kedro_edge.io.reports import JsonDataset, PngDataset, TextDataset
from kedro_edge.io.tabular import TabularDataset

__all__ = [
    "DigitsDataset",
    "FleetDataset",
    "GlyphsDataset",
    "ImageFolderDataset",
    "ImageNpzDataset",
    "JsonDataset",
    "ModelInputDataset",
    "ModelFile",
    "ModelFileDataset",
    "NpzDataset",
    "OnnxModelDataset",
    "PngDataset",
    "TabularDataset",
    "TextDataset",
    "TorchModuleDataset",
]
