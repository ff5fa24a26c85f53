"""The visual memory: k-NN over real-image embeddings, votes, persistence, unlearning, privacy.

Knows embeddings, labels, ids and metadata; knows no backbone and no images (only the backbone's
fingerprint string). See `store.VisualMemory` for the database, `build.build_memory` for the one
builder, `vote` for aggregation and the k sweep, `persist` for the verified on-disk format, `lock`
for one writer at a time and consistent readers, `recipe` for how items are embedded, `unlearn`
for forgetting, `privacy` for exact audits.
"""

from procvision.memory.build import build_memory
from procvision.memory.errors import (
    CorruptMemory,
    FingerprintMismatch,
    InvalidArgument,
    MemoryChanged,
    MemoryLocked,
    MemoryNotFound,
    RecipeMismatch,
    UnknownIds,
    VisualMemoryError,
)
from procvision.memory.lock import (
    lock_path,
    manifest_hash,
    read_memory,
    update_memory,
    writer_lock,
)
from procvision.memory.persist import read_audit, read_blob, read_manifest
from procvision.memory.privacy import (
    LOOFlips,
    brute_force_loo,
    exact_loo_flips,
    group_removal_effect,
    paper_variant,
    privacy_audit,
)
from procvision.memory.store import VisualMemory, load_memory, save_memory
from procvision.memory.unlearn import forget, ids_matching, verify_unlearned
from procvision.memory.vote import (
    METHODS,
    PAPER_KS,
    KNNPrediction,
    knn_predict,
    knn_sweep,
    map_labels,
    neighbour_weights,
    predict,
    topk_classes,
    vote_scores,
)

__all__ = [
    "METHODS",
    "PAPER_KS",
    "CorruptMemory",
    "FingerprintMismatch",
    "InvalidArgument",
    "MemoryChanged",
    "MemoryLocked",
    "MemoryNotFound",
    "RecipeMismatch",
    "UnknownIds",
    "build_memory",
    "lock_path",
    "manifest_hash",
    "read_blob",
    "read_memory",
    "update_memory",
    "writer_lock",
    "LOOFlips",
    "VisualMemory",
    "VisualMemoryError",
    "brute_force_loo",
    "exact_loo_flips",
    "forget",
    "group_removal_effect",
    "ids_matching",
    "KNNPrediction",
    "knn_predict",
    "knn_sweep",
    "load_memory",
    "map_labels",
    "neighbour_weights",
    "paper_variant",
    "predict",
    "privacy_audit",
    "read_audit",
    "read_manifest",
    "save_memory",
    "topk_classes",
    "verify_unlearned",
    "vote_scores",
]
