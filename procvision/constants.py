"""The paper's constants, defined once (`paper_spec.md`); configs and signatures refer to these."""

from __future__ import annotations

#: temperature of the weighted k-NN vote exp(cos / T) (DINO's eval_knn; paper §4.1)
PAPER_T = 0.07
#: the neighbour counts of the paper's k sweep (best-k tables)
PAPER_KS = (1, 2, 3, 4, 5, 10, 20, 100, 200)
#: k of the fixed-k columns (MedMNIST k = 20, privacy audit)
PAPER_K = 20
#: programs in the Shaders21k pool the paper sampled from
SHADERS21K_POOL_SIZE = 21083
