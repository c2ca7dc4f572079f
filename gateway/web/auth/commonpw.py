"""The commonest passwords, refused for panel accounts (gateway.web.auth.users.check_password).

A short built-in list, not a breach corpus: the passwords of 10 characters or more (shorter
ones fail the length rule anyway) that top the public lists of leaked passwords (SecLists,
NCSC's 100 000), and the words a guesser tries first on a radiology box. :func:`is_common`
compares without case and spaces, and also refuses a listed *word* followed only by digits and
punctuation ("Password2024!", "Radiology#1"): the most common way to pass a length rule.
"""

from __future__ import annotations

import re

COMMON: frozenset[str] = frozenset(
    [
        "0000000000",
        "0123456789",
        "0987654321",
        "1111111111",
        "1234512345",
        "1234554321",
        "1234567890",
        "12345678910",
        "1234567890a",
        "123456789a",
        "123456789q",
        "1234qwerty",
        "12345qwert",
        "123123123123",
        "123321123321",
        "123qweasdzxc",
        "1q2w3e4r5t",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "1qazxsw23edc",
        "2222222222",
        "5555555555",
        "7777777777",
        "9876543210",
        "a123456789",
        "abc1234567",
        "abcd123456",
        "abcdefghij",
        "asdfghjkl1",
        "asdfghjkl123",
        "q123456789",
        "qazwsxedc123",
        "qwerty1234",
        "qwerty123456",
        "qwertyuiop",
        "qwertyuiop123",
        "zxcvbnm123",
        "passwordpassword",
        "iloveyou123",
        "iloveyou1234",
        "princess123",
        "football123",
        "baseball123",
        "basketball",
        "chocolate1",
        "sunshine123",
        "superman123",
        "starwars123",
        "whatever123",
        "trustno1234",
        "michael123",
        "jessica123",
        "charlie123",
        "pokemon123",
        "liverpool1",
        "manchester",
        "abcdefg123",
        "aaaaaaaaaa",
        "correcthorsebatterystaple",
    ]
)

# Refused also with any digits and punctuation after them.
COMMON_WORDS: frozenset[str] = frozenset(
    [
        "password",
        "passwort",
        "passw0rd",
        "motdepasse",
        "qwerty",
        "qwertz",
        "azerty",
        "welcome",
        "willkommen",
        "letmein",
        "changeme",
        "admin",
        "administrator",
        "root",
        "default",
        "secret",
        "master",
        "iloveyou",
        "monkey",
        "dragon",
        "football",
        "summer",
        "winter",
        "spring",
        "autumn",
        "dicom",
        "dicomgateway",
        "gateway",
        "edgegateway",
        "radiology",
        "radiologie",
        "hospital",
        "krankenhaus",
        "pacs",
        "medical",
        "doctor",
        "nurse",
    ]
)

_TRAILING = re.compile(r"[\d\W_]+$")


def is_common(password: str) -> bool:
    """True for a listed password, or a listed word with only digits and punctuation after it."""
    folded = "".join(password.lower().split())
    return folded in COMMON or _TRAILING.sub("", folded) in COMMON_WORDS
