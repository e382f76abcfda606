"""How the server reads a stop signal (Server._preempted), without MPI."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from fedsqueeze.fl.server import Server


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def event(self, *args) -> None:
        self.events.append(args)


def _server(on_worker_loss: str) -> SimpleNamespace:
    s = SimpleNamespace(cfg=SimpleNamespace(fl=SimpleNamespace(on_worker_loss=on_worker_loss)),
                        lost=set(), log=_Log(), _stop_signal=None, _round=0, _signal_round=0,
                        _signal_rounds=0, _lost_round={})
    s.signal = lambda sig: Server._handle_signal(s, sig, None)
    s.preempted = lambda t: Server._preempted(s, t)
    return s


def test_no_signal_no_preemption():
    assert not _server("abort").preempted(0)


@pytest.mark.parametrize("mode", ["abort", "continue"])
def test_sigterm_and_usr2_preempt_at_once(mode):
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        s = _server(mode)
        s.signal(sig)
        assert s.preempted(3)


@pytest.mark.parametrize("mode", ["abort", "continue"])
def test_usr1_with_a_worker_lost_is_mpiexecs_failure_notice(mode):
    s = _server(mode)
    s._round = 5
    s.signal(signal.SIGUSR1)
    s._lost_round[2] = 5  # found lost in the round that needed it
    assert not s.preempted(5)
    assert s._stop_signal is None
    assert s.log.events[0][2] == "failure_notice"
    assert not s.preempted(6)


@pytest.mark.parametrize("mode", ["abort", "continue"])
def test_usr1_after_a_loss_that_was_noticed_first_is_still_the_notice(mode):
    s = _server(mode)
    s._lost_round[2] = 4  # a receive failed at once, before the launcher's notice came
    s._round = 5
    s.signal(signal.SIGUSR1)
    assert not s.preempted(5) and not s.preempted(6)
    assert s.log.events[0][2] == "failure_notice"


@pytest.mark.parametrize("mode", ["abort", "continue"])
def test_usr1_without_a_loss_preempts_one_round_later(mode):
    s = _server(mode)
    s._lost_round[3] = 1  # lost long before the signal: not evidence for this one
    s._round = 5
    s.signal(signal.SIGUSR1)
    assert not s.preempted(5)
    assert s.preempted(6)
    assert s.log.events == []
