"""`SegmentationCallback`: the teacher's zero-shot segmentation R² (spec §4.3) at epoch ends."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from procvision.data.augment import normalize
from procvision.data.datasets.voc import VOC_IGNORE, VOCSegmentation
from procvision.eval.segmentation import grid_colours, segmentation_r2


class SegmentationCallback(pl.Callback):
    """Every `every_n_epochs` training epochs, R² of the teacher's patch features on Pascal VOC.

    Logs `seg/r2` (and `seg/r2_rgb`, the RGB baseline of the same images) on global rank 0, and a
    TensorBoard picture `seg/pca`: each of the first `n_images` images above the PCA colours of
    its teacher features. Other ranks wait at a barrier.

    Args:
        voc: Pascal VOC2012 folder (official layout).
        split: split file of ImageSets/Segmentation.
        max_images: the first N images of the split (R² is per image, so a few hundred suffice
            as a progress signal).
        image_size: side the images are resized to (paper: 448; None: the model's img_size).
        grid: evaluation grid side (paper: 112).
        every_n_epochs: evaluation period in epochs.
        n_images: images in the TensorBoard picture (0: none).
    """

    def __init__(
        self,
        voc: str,
        split: str = "val",
        max_images: int | None = 100,
        image_size: int | None = None,
        grid: int = 112,
        every_n_epochs: int = 1,
        n_images: int = 4,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if max_images is not None and max_images < 1:  # fail at construction, not at epoch end
            raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
        self.voc, self.split, self.max_images = voc, split, max_images
        self.image_size, self.grid = image_size, grid
        self.every_n_epochs, self.n_images = every_n_epochs, n_images
        self._dataset: VOCSegmentation | None = None

    def _data(self, pl_module: pl.LightningModule) -> VOCSegmentation:
        if self._dataset is None:
            size = self.image_size or int(pl_module.teacher_backbone.config.get("img_size", 448))
            self._dataset = VOCSegmentation(self.voc, self.split, size, self.max_images)
        return self._dataset

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        try:
            if trainer.is_global_zero:
                self._evaluate(trainer, pl_module)
        finally:  # an error on rank 0 must not leave the other ranks waiting forever
            trainer.strategy.barrier("procvision-seg")

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = self._data(pl_module)
        try:
            with torch.no_grad():
                scores = segmentation_r2(
                    pl_module.teacher_backbone,
                    data,
                    self.grid,
                    VOC_IGNORE,
                    str(pl_module.device),
                    progress=False,
                )
        except ValueError as err:  # no scorable image (e.g. constant features): not fatal
            rank_zero_warn(f"SegmentationCallback: no R² this epoch: {err}")
            return
        pl_module.log_dict(
            {"seg/r2": scores["model"], "seg/r2_rgb": scores["rgb"]}, rank_zero_only=True
        )
        self._picture(trainer, pl_module, data)

    @torch.no_grad()
    def _picture(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, data: VOCSegmentation
    ) -> None:
        """TensorBoard image `seg/pca`: the first images (top row) over their PCA colours."""
        boards = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        n = min(self.n_images, len(data))
        if not boards or n == 0:
            return
        columns = []
        for i in range(n):
            image = data[i][0].to(pl_module.device)
            patches = pl_module.teacher_backbone.forward_features(normalize(image[None]))
            pca = grid_colours(patches["patches"][0], self.grid).nan_to_num(0.0)
            small = torch.nn.functional.interpolate(image[None], size=(self.grid, self.grid))[0]
            columns.append(torch.cat([small, pca.permute(2, 0, 1).float()], dim=1))
        picture = torch.cat(columns, dim=2).clamp(0, 1).cpu()
        for board in boards:
            board.add_image("seg/pca", picture, trainer.global_step)
