"""confkd: reproducible, confidence-preserving knowledge distillation of text classifiers."""

import os as _os

# OpenMP threads spin-wait by default; on small machines with another busy process that makes
# torch 10-20x slower. These must be set before torch is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
