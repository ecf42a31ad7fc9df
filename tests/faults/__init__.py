"""Fault injection under load: the load driver, the deployments it runs against, and the
CI tests (``bench/faults.py`` runs the same scenarios longer, by hand)."""
