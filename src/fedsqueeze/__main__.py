"""``python -m fedsqueeze``.

Ranks are the parallelism: unless the user says otherwise, BLAS and OpenMP get one thread per
process, set before NumPy or torch load (an oversubscribed node otherwise spends its time in
spinning BLAS threads, e.g. in ``np.linalg.norm`` on the server).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from .cli import main  # noqa: E402 - after the thread settings

raise SystemExit(main())
