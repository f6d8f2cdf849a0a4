"""Cartwise core: settings, event and catalog schemas, vector index adapters, model registry, CLI.

Dependencies point one way: ``cartwise`` <- ``encoders`` <- ``streams`` / ``grpc_api`` / trainer.
"""

__version__ = "0.1.0"
