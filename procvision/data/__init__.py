"""Procedural image sources, compositions, augmentation and real datasets."""
