"""timm-scaling: EfficientNet-B0 scaled by depth, width, resolution or compound coefficient,
as timm models, with training, profiling and frontier analysis.

Importing the package is cheap (no torch): it makes sure the variants are in timm's registry
whenever timm is imported. ``import timm_scaling.models`` registers them at once.
"""

import timm_scaling_autoload

__version__ = "0.1.0"

timm_scaling_autoload.install(force=True)
