"""The evaluation-set description for the evaluation layer (defined in the data layer, where
`KNNDataModule` uses it too): see `procvision.data.datasets.datamodule`."""

from procvision.data.datasets.datamodule import EvalSet, SetKind, knn_sets, with_split

__all__ = ["EvalSet", "SetKind", "knn_sets", "with_split"]
