"""Flower Deployment Engine runtime: the same method objects and round steps, across machines.

``server_app:app`` and ``client_app:app`` are the Flower components; the app project that names
them lives in ``apps/flower/`` (see ``docs/flower.md``). Importing this package does not import
flwr or torch, so the config helpers stay usable without either.
"""
