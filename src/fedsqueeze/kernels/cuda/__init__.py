"""Numba CUDA twins of ``kernels.cpu``; imported lazily by ``kernels.dispatch`` (importing numba.cuda is slow)."""
