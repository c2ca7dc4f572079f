"""gateway.web.auth.throttle's rules on their own: pure, time passed in (F = 5, L = 900 s)."""

from __future__ import annotations

import pytest

from gateway.web.auth.throttle import ACCOUNT_DELAY, ADDRESS_FACTOR, Rule, Throttle

F = 5
L = 900.0


@pytest.fixture
def throttle() -> Throttle:
    return Throttle(F, L)


def _wrong(throttle: Throttle, account: str, address: str, now: float) -> None:
    assert throttle.begin(account, address, now).allowed


def _right(throttle: Throttle, account: str, address: str, now: float) -> bool:
    verdict = throttle.begin(account, address, now)
    if verdict.allowed:
        throttle.succeeded(account, address, now)
    return verdict.allowed


def test_a_success_does_not_wipe_the_addresss_wrong_passwords(throttle: Throttle) -> None:
    # A guesser with an account of their own logs in with it between guesses (issue 11: 42
    # failures from one address never got a 429).
    now = 0.0
    tried = 0
    while throttle.check(f"guess{tried}", "10.0.0.66", now).allowed:
        _wrong(throttle, f"guess{tried}", "10.0.0.66", now)
        tried += 1
        if tried % 4 == 0:
            assert _right(throttle, "mallory", "10.0.0.66", now + 0.5)
        now += 1.0
        assert tried <= 42, "the address was never stopped"
    assert tried == F * ADDRESS_FACTOR
    verdict = throttle.check("anyone", "10.0.0.66", now)
    assert verdict.rule is Rule.ADDRESS
    assert verdict.wait == pytest.approx(L - now)  # until the first of them is L old
    assert throttle.check("anyone", "10.0.0.67", now).allowed  # another address is not held
    assert throttle.check("anyone", "10.0.0.66", L).allowed


def test_wrong_passwords_lock_the_account_from_that_address_only(throttle: Throttle) -> None:
    for n in range(F):
        _wrong(throttle, "eng", "10.0.0.9", float(n))
    held = throttle.check("eng", "10.0.0.9", 10.0)
    assert held.rule is Rule.ACCOUNT_FROM_ADDRESS
    assert held.wait == pytest.approx(L - 6.0)
    assert not _right(throttle, "eng", "10.0.0.9", 10.0)  # even the right one, from there
    # The engineer at their own desk: after the account's short delay, in.
    slowed = throttle.check("eng", "10.0.0.1", 5.0)
    assert slowed.rule is Rule.ACCOUNT and slowed.wait == pytest.approx(ACCOUNT_DELAY - 1.0)
    assert _right(throttle, "eng", "10.0.0.1", 4.0 + ACCOUNT_DELAY)
    assert throttle.check("eng", "10.0.0.9", 20.0).rule is Rule.ACCOUNT_FROM_ADDRESS
    assert throttle.check("eng", "10.0.0.9", 4.0 + L).allowed


def test_a_guesser_on_many_addresses_gets_one_try_per_delay(throttle: Throttle) -> None:
    now = 0.0
    for n in range(F):
        _wrong(throttle, "eng", f"10.0.1.{n}", now)
    tries = 0
    for n in range(600):  # one attempt a second from a new address each time, for 10 min
        now = float(n)
        if throttle.begin("eng", f"10.0.2.{n % 250}", now).allowed:
            tries += 1
    assert tries == pytest.approx(600 / ACCOUNT_DELAY, abs=1)
    assert throttle.restricted("eng", now)


def test_a_success_starts_the_accounts_counts_again(throttle: Throttle) -> None:
    for n in range(F - 1):
        _wrong(throttle, "eng", "10.0.0.1", float(n))
    assert _right(throttle, "eng", "10.0.0.1", 10.0)
    for n in range(F - 1):
        _wrong(throttle, "eng", "10.0.0.1", 20.0 + n)
    assert throttle.check("eng", "10.0.0.1", 30.0).allowed


def test_a_try_counts_as_wrong_until_it_succeeds(throttle: Throttle) -> None:
    # Parallel requests: each is counted when allowed, before its hash is checked.
    allowed = [throttle.begin("eng", "10.0.0.1", 1.0).allowed for _ in range(F + 3)]
    assert allowed == [True] * F + [False] * 3


def test_unlock_lifts_the_accounts_waits_but_not_the_addresss(throttle: Throttle) -> None:
    for n in range(F * ADDRESS_FACTOR):
        _wrong(throttle, "eng" if n < F else f"x{n}", "10.0.0.9", float(n))
    assert throttle.restricted("eng", 20.0)
    throttle.unlock("eng")
    assert not throttle.restricted("eng", 20.0)
    assert throttle.check("eng", "10.0.0.1", 20.0).allowed
    assert throttle.check("eng", "10.0.0.9", 20.0).rule is Rule.ADDRESS
