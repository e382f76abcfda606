"""Pick the CPU or the CUDA kernel from the array type; ``numba.cuda`` is imported lazily.

NumPy arrays (and CPU torch tensors, after the codec's ``as_flat_f32``) run the ``kernels.cpu``
drivers. A Numba device array, or anything exposing ``__cuda_array_interface__`` (a torch CUDA
tensor), runs the ``kernels.cuda`` twin on the device: the input never travels to the host; only
the small encoded result (norms, packed codes) is copied back into the host buffers the codec
allocated. Decoding writes into a device ``out`` the same way.

The functions here do no validation beyond shapes and dtypes of device inputs: codecs validate.

>>> import numpy as np
>>> is_device(np.zeros(3))
False
>>> out = np.zeros(1, np.uint8)
>>> pack_bits(np.array([1, 2, 3], np.uint16), 2, out)
>>> int(out[0]) == 1 | 2 << 2 | 3 << 4
True
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from .cpu import bitpack as _cpu_bitpack
from .cpu import quantize as _cpu_quantize
from .cpu import signs as _cpu_signs

__all__ = ["is_device", "device_vector", "cuda_module", "pack_bits", "unpack_bits",
           "qsgd_encode", "qsgd_decode", "pack_signs", "unpack_signs", "segment_stats",
           "sign_abs_encode",
           "ternary_encode", "ternary_decode"]


def is_device(x) -> bool:
    """True for a Numba device array or an object with ``__cuda_array_interface__``."""
    if isinstance(x, np.ndarray):
        return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    # the CUDA simulator's arrays have no interface attribute; recognise them by their type
    return type(x).__module__.startswith("numba.cuda")


def cuda_module(name: str) -> ModuleType:
    """``fedsqueeze.kernels.cuda.<name>`` (imports ``numba.cuda`` on first use)."""
    return importlib.import_module(f"{__package__}.cuda.{name}")


def _cuda():
    from numba import cuda

    return cuda


def device_vector(x):
    """A flat float32 Numba device view of a device array or torch CUDA tensor (no copy)."""
    cuda = _cuda()
    if hasattr(x, "detach"):  # torch
        x = x.detach()
        if not x.is_contiguous():
            raise ValueError("device tensor must be contiguous")
        x = cuda.as_cuda_array(x.reshape(-1))
    elif not cuda.devicearray.is_cuda_ndarray(x):
        x = cuda.as_cuda_array(x)
    if np.dtype(x.dtype) != np.float32:
        raise TypeError(f"expected float32 input, got {x.dtype}")
    if x.ndim != 1:
        x = x.reshape(-1)
    return x


def _scratch(n: int, *dtypes) -> list[np.ndarray]:
    m = max(8, min(_cpu_quantize.CHUNK, (n + 7) // 8 * 8))
    return [np.empty(m, dtype=d) for d in dtypes]


# -- bit packing ------------------------------------------------------------------------------
def pack_bits(codes, width: int, out) -> None:
    """Pack ``codes`` at ``width`` bits into ``out`` (both on the host or both on the device)."""
    if is_device(codes):
        cuda_module("bitpack").pack_bits(codes, width, out)
    else:
        _cpu_bitpack.pack_bits(codes, width, out)


def unpack_bits(packed, width: int, n: int, out) -> None:
    """Unpack ``n`` values of ``width`` bits into ``out`` (both host or both device)."""
    if is_device(out):
        cuda_module("bitpack").unpack_bits(packed, width, n, out)
    else:
        _cpu_bitpack.unpack_bits(packed, width, n, out)


# -- QSGD -------------------------------------------------------------------------------------
def qsgd_encode(x, params: tuple, norms: np.ndarray, out: np.ndarray) -> None:
    """Bucket norms and packed codes of ``x`` into the host arrays ``norms`` and ``out``.

    ``params = (s, bucket, width, k0, k1, c3)``.
    """
    if is_device(x):
        cuda = _cuda()
        xd = device_vector(x)
        d_norms = cuda.device_array(norms.shape[0], dtype=np.float32)
        d_scales = cuda.device_array(max(1, norms.shape[0]), dtype=np.float32)
        d_out = cuda.device_array(out.shape[0], dtype=np.uint8)
        cuda_module("quantize").qsgd_encode(xd, params, d_norms, d_out, d_scales)
        d_norms.copy_to_host(norms)
        d_out.copy_to_host(out)
        return
    scale_scr, code_scr = _scratch(x.shape[0], np.float32, np.uint16)
    _cpu_quantize.qsgd_encode(x, tuple(int(v) for v in params), norms, out, scale_scr, code_scr)


def qsgd_decode(packed: np.ndarray, norms: np.ndarray, params: tuple, out) -> int:
    """Decode into ``out`` (host or device); returns the number of invalid levels."""
    if is_device(out):
        cuda = _cuda()
        return cuda_module("quantize").qsgd_decode(
            cuda.to_device(np.ascontiguousarray(packed)), cuda.to_device(np.asarray(norms)),
            params, out)
    unit_scr, code_scr = _scratch(out.shape[0], np.float32, np.uint16)
    return int(_cpu_quantize.qsgd_decode(packed, norms, tuple(int(v) for v in params), out,
                                         unit_scr, code_scr))


# -- signs and ternary ------------------------------------------------------------------------
def pack_signs(x, out: np.ndarray) -> None:
    """Sign bits of ``x`` (host or device) into the host array ``out``."""
    if is_device(x):
        d_out = _cuda().device_array(out.shape[0], dtype=np.uint8)
        cuda_module("signs").pack_signs(device_vector(x), d_out)
        d_out.copy_to_host(out)
    else:
        _cpu_signs.pack_signs(x, out)


def unpack_signs(packed: np.ndarray, bounds: np.ndarray, scales: np.ndarray, out) -> None:
    """``+-scales[segment]`` per bit into ``out`` (host or device)."""
    if is_device(out):
        cuda = _cuda()
        cuda_module("signs").unpack_signs(cuda.to_device(np.ascontiguousarray(packed)),
                                          cuda.to_device(bounds), cuda.to_device(scales), out)
    else:
        _cpu_signs.unpack_signs(packed, bounds, scales, out)


def segment_stats(x, bounds: np.ndarray) -> np.ndarray:
    """``float64[T, 4]``: per segment ``(sum x, sum x^2, sum |x|, max |x|)`` in the fixed
    order of ``kernels.cpu.signs``; identical on both backends."""
    pieces = _cpu_signs.piece_bounds(bounds)
    partials = np.zeros((pieces.shape[0], 4), dtype=np.float64)
    if is_device(x):
        cuda = _cuda()
        d_part = cuda.to_device(partials)
        if pieces.shape[0]:
            cuda_module("signs").segment_partials(device_vector(x), cuda.to_device(pieces),
                                                  d_part)
        d_part.copy_to_host(partials)
    elif pieces.shape[0]:
        _cpu_signs.segment_partials(x, pieces, partials)
    stats = np.zeros((len(bounds) - 1, 4), dtype=np.float64)
    _cpu_signs.combine_partials(pieces, partials, stats)
    return stats


def sign_abs_encode(x, bounds: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Sign bits of ``x`` (host or device) into the host array ``out``; returns ``float64[T]``,
    the ``sum |x|`` column of :func:`segment_stats` (same bits). One pass over a host ``x``."""
    if is_device(x):
        stats = segment_stats(x, bounds)
        pack_signs(x, out)
        return np.ascontiguousarray(stats[:, 2])
    sums = np.zeros(len(bounds) - 1, dtype=np.float64)
    _cpu_signs.sign_abs_encode(x, _cpu_signs.piece_bounds(bounds), sums, out)
    return sums


def ternary_encode(x, bounds: np.ndarray, clips: np.ndarray, scales: np.ndarray, params: tuple,
                   out: np.ndarray) -> None:
    """Two-bit TernGrad codes of ``x`` (host or device) into the host array ``out``."""
    params = tuple(int(v) for v in params)
    if is_device(x):
        cuda = _cuda()
        d_out = cuda.device_array(out.shape[0], dtype=np.uint8)
        cuda_module("signs").ternary_encode(device_vector(x), cuda.to_device(bounds),
                                            cuda.to_device(clips), cuda.to_device(scales),
                                            params, d_out)
        d_out.copy_to_host(out)
        return
    clip_scr, scale_scr, code_scr = _scratch(x.shape[0], np.float32, np.float32, np.uint8)
    _cpu_signs.ternary_encode(x, bounds, clips, scales, params, out, clip_scr, scale_scr,
                              code_scr)


def ternary_decode(packed: np.ndarray, bounds: np.ndarray, scales: np.ndarray, out) -> int:
    """Decode two-bit codes into ``out`` (host or device); returns the count of code 3."""
    if is_device(out):
        cuda = _cuda()
        return cuda_module("signs").ternary_decode(
            cuda.to_device(np.ascontiguousarray(packed)), cuda.to_device(bounds),
            cuda.to_device(scales), out)
    return int(_cpu_signs.ternary_decode(packed, bounds, scales, out))
