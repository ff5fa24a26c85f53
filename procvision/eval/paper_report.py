"""The paper's reported numbers (spec §4.9, §5; paper Tables 1-6), for reference columns in reports.

Keys are model names as the paper writes them; values in percent except NIGHTS (a fraction).
"""

from __future__ import annotations

PAPER_MODELS = ("ImageNet", "Places", "S. KML Mixup", "S. KML", "S. Mixup", "Shaders", "StyleGAN",
                "Random init")  # fmt: skip

#: Table 1, k-NN top-1 (best k) per dataset
TABLE1_KNN = {
    "ImageNet": {"flowers102": 83.43, "cub": 55.20, "food101": 64.45, "imagenet": 68.89},
    "Places": {"flowers102": 59.51, "cub": 19.09, "food101": 47.78, "imagenet": 47.30},
    "S. KML Mixup": {"flowers102": 75.20, "cub": 27.08, "food101": 48.70, "imagenet": 37.88},
    "S. KML": {"flowers102": 71.86, "cub": 24.02, "food101": 46.00, "imagenet": 35.38},
    "S. Mixup": {"flowers102": 73.33, "cub": 19.85, "food101": 47.78, "imagenet": 35.45},
    "Shaders": {"flowers102": 66.18, "cub": 15.59, "food101": 38.05, "imagenet": 30.69},
    "StyleGAN": {"flowers102": 41.86, "cub": 8.61, "food101": 22.73, "imagenet": 13.73},
    "Random init": {"flowers102": 11.18, "cub": 1.93, "food101": 5.32, "imagenet": 1.84},
}

#: Table 2, COCO R² (100 (1 - inertia))
TABLE2_R2 = {"ImageNet": 63.7, "Places": 62.1, "S. KML Mixup": 53.7, "S. KML": 55.9,
             "S. Mixup": 51.4, "Shaders": 55.0, "StyleGAN": 48.5, "Random init": 36.7,
             "RGB": 19.4}  # fmt: skip

#: Table 3, MedMNIST k-NN top-1 (best k) on the official test split, 224 px
MEDMNIST_SETS = (
    "path",
    "derma",
    "oct",
    "pneumonia",
    "breast",
    "blood",
    "tissue",
    "organa",
    "organc",
    "organs",
)  # fmt: skip  (the paper's column order)
MEDMNIST_PAPER_BEST = {
    "path": 91.1,
    "derma": 76.8,
    "oct": 77.6,
    "pneumonia": 94.6,
    "breast": 86.3,
    "blood": 96.6,
    "tissue": 70.3,
    "organa": 95.1,
    "organc": 92.0,
    "organs": 81.3,
}  # fmt: skip  (best of the MedMNIST paper)
TABLE3_MEDMNIST = {
    "ImageNet": (98.34, 82.05, 95.11, 95.23, 91.03, 96.79, 57.00, 94.33, 93.81, 85.89),
    "Places": (98.21, 80.96, 94.52, 96.18, 91.03, 95.85, 54.83, 90.09, 92.56, 82.26),
    "S. KML Mixup": (98.60, 81.36, 92.85, 96.56, 93.59, 95.09, 55.62, 83.76, 81.48, 74.43),
    "S. KML": (99.30, 82.15, 92.12, 96.56, 91.03, 96.26, 58.02, 85.07, 85.37, 81.57),
    "S. Mixup": (98.88, 81.56, 89.14, 96.56, 92.31, 96.73, 53.27, 81.96, 82.53, 74.10),
    "Shaders": (98.96, 81.26, 92.09, 95.61, 92.31, 97.72, 58.74, 86.83, 86.04, 81.69),
    "StyleGAN": (98.05, 77.67, 85.04, 95.04, 87.18, 91.59, 53.10, 76.81, 77.30, 76.06),
    "Random init": (73.05, 67.50, 66.39, 84.54, 83.33, 85.51, 44.27, 75.07, 68.94, 60.93),
}
TABLE3_MEDMNIST = {m: dict(zip(MEDMNIST_SETS, v, strict=True)) for m, v in TABLE3_MEDMNIST.items()}

#: Table 4, Gestalt R² per principle
GESTALT_PRINCIPLES = ("closure", "kanisza", "connection", "continuity", "enclosure", "proximity",
                      "similarity")  # fmt: skip
TABLE4_GESTALT = {
    "ImageNet": (53.1, 21.7, 6.0, 6.3, 15.8, 24.4, 4.9),
    "Places": (29.0, 12.7, 11.7, 17.3, 25.6, 47.1, 3.1),
    "S. KML Mixup": (36.1, 10.4, 45.1, 9.3, 31.9, 65.1, 1.3),
    "S. KML": (34.5, 14.6, 52.7, 17.7, 64.8, 52.0, 21.5),
    "S. Mixup": (22.8, 15.4, 15.0, 31.1, 1.1, 30.2, 4.3),
    "Shaders": (36.6, 15.8, 8.7, 40.0, 26.0, 12.1, 50.9),
    "StyleGAN": (25.4, 12.2, 20.4, 46.3, 21.7, 7.9, 64.8),
    "Random init": (0.9, 1.0, 17.6, 13.3, 2.8, 4.3, 21.9),
    "RGB": (1.2, 0.0, 13.4, 28.5, 4.7, 28.9, 73.4),
}
TABLE4_GESTALT = {
    m: dict(zip(GESTALT_PRINCIPLES, v, strict=True)) for m, v in TABLE4_GESTALT.items()
}

#: Table 5, NIGHTS val 2AFC (fraction) and its std of the mean, N = 1720
TABLE5_NIGHTS = {"ImageNet": (0.8733, 0.0080), "Places": (0.8331, 0.0090),
                 "S. KML Mixup": (0.8105, 0.0095), "S. KML": (0.8244, 0.0092),
                 "S. Mixup": (0.8110, 0.0094), "Shaders": (0.8169, 0.0093),
                 "StyleGAN": (0.7605, 0.0103)}  # fmt: skip
NIGHTS_VAL_N = 1720

#: Table 6 (App. B.2), ImageNet-1K k-NN vs linear top-1
TABLE6_KNN_LINEAR = {"ImageNet": (68.9, 73.6), "Places": (47.3, 59.6),
                     "S. KML Mixup": (37.9, 47.3), "S. KML": (35.4, 47.1),
                     "S. Mixup": (35.4, 44.8), "Shaders": (30.7, 43.1),
                     "StyleGAN": (13.7, 26.4)}  # fmt: skip
