"""Why the daemon's run ends (gateway.cli.StopRequests): a stop signal always beats the panel's
restart in place, whichever came first, so systemd is never told RELOADING=1 in answer to a stop
and the process never execs itself into systemd's stop state."""

from __future__ import annotations

from gateway.cli import StopRequests


def test_a_restart_alone_stops_the_loop_and_stands() -> None:
    requests = StopRequests()
    requests.ask_restart()
    assert requests.stop.is_set() and requests.restart_wanted()


def test_a_signal_after_the_restart_overrules_it() -> None:
    requests = StopRequests()
    requests.ask_restart()
    requests.signal()  # systemctl stop during the restart's grace or its stop
    assert requests.stop.is_set() and not requests.restart_wanted()


def test_a_restart_asked_after_a_signal_is_ignored() -> None:
    requests = StopRequests()
    requests.signal()
    requests.ask_restart()  # the panel's timer fired while the services stop
    assert requests.stop.is_set() and not requests.restart_wanted()


def test_a_signal_alone_is_a_plain_stop() -> None:
    requests = StopRequests()
    requests.signal()
    assert requests.stop.is_set() and not requests.restart_wanted()
