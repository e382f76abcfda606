"""In-process split learning with the real server maths, client objects and payload code (no MPI):
the lockstep loop of ``split.server.SplitServer.run_round`` with the transport replaced by byte
strings. Used by the unit tests to check the maths the MPI roles run."""

from __future__ import annotations

import copy

import numpy as np

from fedsqueeze import config as C
from fedsqueeze.comm.transport import LoopbackTransport
from fedsqueeze.comm.wire import join_sections
from fedsqueeze.fl.strategy import ServerContext
from fedsqueeze.fl.train import flat_params
from fedsqueeze.fl.world import build_world
from fedsqueeze.split.client import PrefixClient, SplitWorker
from fedsqueeze.split.payloads import ActSpec, grad_sections, parse_act
from fedsqueeze.split.schedule import RoundPlan
from fedsqueeze.split.strategy import SplitStrategy


def payload(sections) -> bytes:
    return b"".join(bytes(p) for p in join_sections(sections))


def small_config(fl_method: str = "split", **sections) -> C.RunConfig:
    """digits + digits_cnn cut at conv1, 4 IID clients, all sampled, at most 3 steps."""
    base = {"seed": 3, "data": {"name": "digits", "clients": 4, "partition": "iid"},
            "model": {"name": "digits_cnn"},
            "train": {"batch_size": 16, "lr": 0.1, "max_steps": 3},
            "sampling": {"fraction": 1.0}, "fl": {"rounds": 2, "method": fl_method},
            "method": {"cut": "conv1"}}
    return C.from_dict(C.apply_overrides(base, sections))


class Sim:
    """A server strategy and one worker hosting every client."""

    def __init__(self, cfg: C.RunConfig) -> None:
        self.cfg = cfg
        self.world = w = build_world(cfg)
        ctx = ServerContext(cfg, w.options, w.n_params, w.w0, w.up, w.down, cfg.data.clients,
                            w.samples, model_factory=w.model_factory)
        self.strategy = SplitStrategy(ctx)
        self.worker = SplitWorker(w, LoopbackTransport(1, 2), state_dir=None)
        self.spec = ActSpec(self.strategy.parts.d_a, int(w.dataset.num_classes),
                            self.worker.gpq)

    def round(self, t: int) -> dict[int, PrefixClient]:
        st, wk, tr = self.strategy, self.worker, self.cfg.train
        clients = st.sample(t)
        st.begin_round(t, clients, self.world.samples[clients])
        plan = RoundPlan.build(clients, samples=self.world.samples, batch=tr.batch_size,
                               epochs=tr.epochs, max_steps=tr.max_steps)
        pcs = {int(c): PrefixClient(copy.deepcopy(wk.parts.prefix), st.prefix_w.copy(),
                                    wk.trainer.batches(int(c), t), client=int(c), round=t,
                                    worker=wk) for c in plan.clients}
        for s in range(1, plan.n_steps + 1):
            st.begin_step()
            for c in plan.active(s):
                c = int(c)
                msg = parse_act(payload(pcs[c].forward(s)), self.spec, B=plan.batch_at(c, s),
                                step=s)
                z = msg.dense if msg.code is None else wk.gpq.decode(msg.code)
                grad, _ = st.serve(z, msg.labels)
                pcs[c].backward(payload(grad_sections(wk.backward, grad, msg.code)))
            st.end_step()
        for c, pc in pcs.items():
            st.accumulate_prefix(t, c, int(self.world.samples[c]), flat_params(pc.prefix))
            if pc.state is not None:
                wk.store[("gpq", c)] = pc.state
        st.end_round(t)
        return pcs

    @property
    def weights(self) -> np.ndarray:
        return self.strategy.weights
