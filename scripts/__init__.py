"""Project tooling: the Meltano demo, its embedded warehouse, and meltano.yml generation.

Run as modules from the repository root (`python -m scripts.demo`); the end-to-end test
imports `scripts.pipeline` so the demo and the test drive Meltano the same way.
"""
