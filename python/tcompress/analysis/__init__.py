"""Model + data -> measurements: activation statistics, block linearity, activation geometry, token difficulty.

Every analysis returns dataclasses that serialize to JSON; nothing here knows about kernels, and architecture
details come from :mod:`tcompress.models`.
"""
