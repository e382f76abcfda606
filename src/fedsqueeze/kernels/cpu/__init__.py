"""Numba ``@njit`` kernels. Each module has a ``kernels.cuda`` twin with the same function names."""
