"""Exported artifacts as data: the format table, set layout, graph versions, manifests, GPU identity.

Below both `export` (which writes sets) and `backends` (which open them); it builds nothing.
"""
