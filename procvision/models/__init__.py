"""Perception: timm backbones, the DINO head, loss, EMA and schedules, and the DINO LightningModule.

Imports nothing from `procvision.memory` or `procvision.eval` (data flows one way).
"""

from procvision.models.backbone import Backbone, random_backbone
from procvision.models.export import export_backbone, load_backbone

__all__ = ["Backbone", "export_backbone", "load_backbone", "random_backbone"]
