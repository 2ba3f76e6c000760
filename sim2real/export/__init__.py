"""ONNX export with the contract inside, the ``OnnxPolicy`` runtime and deployment bundles.

The runtime side (``OnnxPolicy``, bundle verification, the contract) needs numpy and onnxruntime only, so
it runs on a robot. Exporting needs torch, onnx and onnxscript: ``sim2real.export.exporter.export_run``.
"""

from sim2real.export.bundle import BundleError, verify_bundle
from sim2real.export.contract import ContractError, env_contract
from sim2real.export.runtime import OnnxPolicy

__all__ = ["BundleError", "ContractError", "OnnxPolicy", "env_contract", "verify_bundle"]
