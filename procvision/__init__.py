"""procvision: procedural data, DINO perception, and an editable visual memory.

Re-implements *Separating Knowledge and Perception with Procedural Data* (ICML 2025).
"""

__version__ = "0.1.0"
