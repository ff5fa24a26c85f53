"""Evaluations over the visual memory: embedding, k-NN classification, privacy, callbacks, reports."""
