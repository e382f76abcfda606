"""``[method]`` options of the split-learning methods (validated once, at load time).

>>> FedLiteOptions.model_validate({"q": 32, "R": 2, "lambda": 0.01}).lambda_
0.01
>>> "q" in SplitOptions.model_fields     # the baseline has no quantiser knobs
False
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..compress.activations import GPQ

__all__ = ["SplitOptions", "FedLiteOptions"]


class SplitOptions(BaseModel):
    """Uncompressed split learning (SplitFed): the baseline of FedLite.

    Attributes
    ----------
    cut : str or int
        Cut of ``model.name`` (``models.split.split_model``): a named cut such as ``"conv1"``
        (digits_cnn, cnn1d) or ``"embedding"`` (char_gru), or the number of leading stages.
    backward : {"dense_fp32", "dense_fp16"}
        Format of the gradient message (METHODS.md 5.4).
    server_lr : float or None
        Learning rate of the server's suffix optimiser (``None``: ``train.lr``).
    server_optimizer : {"sgd", "adam"} or None
        Suffix optimiser (``None``: ``train.optimizer``; momentum and weight decay follow
        ``train``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    cut: str | int = "conv1"
    backward: Literal["dense_fp32", "dense_fp16"] = "dense_fp32"
    server_lr: float | None = Field(None, gt=0)
    server_optimizer: Literal["sgd", "adam"] | None = None

    @property
    def compressed(self) -> bool:
        return False

    def make_gpq(self) -> GPQ | None:
        """The activation quantiser (``None``: activations travel as dense float32)."""
        return None


class FedLiteOptions(SplitOptions):
    """FedLite: grouped product quantisation of the activations plus gradient correction.

    Attributes (besides :class:`SplitOptions`)
    ----------------------------------------
    q, R, L : int
        Sub-vectors per sample, groups (dividing ``q``) and centroids per group (METHODS.md 5.2).
    kmeans_iters : int
        Maximum Lloyd updates per batch.
    lambda_ : float
        Gradient-correction strength, key ``lambda``: ``g + (lambda / B)(z - z_tilde)``.
    backward : {"dense_fp32", "dense_fp16", "codebook"}
    grouping : {"position", "sample"}
    eval_quantized : bool
        Evaluate through the quantiser (k-means++ per test batch) instead of bypassing it.
    """

    backward: Literal["dense_fp32", "dense_fp16", "codebook"] = "dense_fp32"  # type: ignore[assignment]
    q: int = Field(64, ge=1, le=65535)
    R: int = Field(1, ge=1, le=65535)
    L: int = Field(16, ge=1, le=65535)
    kmeans_iters: int = Field(10, ge=0, le=10_000)
    lambda_: float = Field(1e-3, ge=0, alias="lambda")
    grouping: Literal["position", "sample"] = "position"
    eval_quantized: bool = False

    @model_validator(mode="after")
    def _r_divides_q(self) -> FedLiteOptions:
        if self.q % self.R:
            raise ValueError(f"R = {self.R} must divide q = {self.q}")
        return self

    @property
    def compressed(self) -> bool:
        return True

    def make_gpq(self) -> GPQ:
        return GPQ(q=self.q, R=self.R, L=self.L, iters=self.kmeans_iters, grouping=self.grouping)
