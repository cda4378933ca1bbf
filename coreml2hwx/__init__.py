"""coreml2hwx: Core ML models in, Apple Neural Engine programs (.hwx, .anec) out."""

__version__ = "0.1.0"
