"""dprscope: dense passage retrieval that can explain its own retrievals.

This top-level module stays import-light on purpose: the client package imports the
generated protobuf modules under ``dprscope.v1`` and must not drag torch or faiss in.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
