"""The argument-check helpers (cfrec.validation): one style, a ConfigError naming the key."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cfrec.errors import ConfigError
from cfrec.validation import check_bool, check_choice, check_int, check_keys, check_number


def test_each_helper_returns_the_value_or_names_the_key():
    assert check_int("k", np.int64(3), 1) == 3 and check_number("lr", 1, 0, open_low=True) == 1.0
    assert check_choice("mode", "a", ("a", "b")) == "a" and check_bool("clip", False) is False
    check_keys("train", {"lr": 1}, ("lr", "epochs"))
    for call, message in [
        (lambda: check_int("k", True, 1), r"^k: must be an integer >= 1, got True"),
        (lambda: check_int("k", 0, 1), r"^k: must be an integer >= 1, got 0"),
        (lambda: check_number("lr", 0, 0, open_low=True), r"^lr: must be a number > 0, got 0"),
        (lambda: check_number("m", 1.0, 0, 1, open_high=True), r"^m: must be a number in \[0, 1\), got 1.0"),
        (lambda: check_number("x", math.nan), r"^x: must be a number \(not NaN\), got nan"),
        (lambda: check_number("x", "abc", 0), r"^x: must be a number >= 0, got 'abc'"),
        (lambda: check_choice("mode", "c", ("a", "b")), r"^mode: must be one of a, b; got 'c'"),
        (lambda: check_bool("clip", 1), r"^clip: must be true or false, got 1"),
        (lambda: check_keys("train", {"bogus": 1}, ("lr",)), r"^train\.bogus: unknown option; options: lr"),
        (lambda: check_keys("", {"bogus": 1}, ("lr",)), r"^bogus: unknown option"),
    ]:
        with pytest.raises(ConfigError, match=message):
            call()
