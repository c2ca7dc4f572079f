"""E1394 records: delimiters and escapes, P to patient identity, R to measurements, C kept."""

from __future__ import annotations

import pytest

from gateway.identity import PatientIdentity
from gateway.ingest.serial.astm_records import (
    Delimiters,
    encode_records,
    ends_with_terminator,
    split_records,
    to_messages,
)
from gateway.ingest.serial.message import Concept, DeviceMessage
from gateway.ingest.serial.profile import DeviceProfile
from tests.ingest.serial.astm_wire import builtin_profile, simulator_messages

PROFILE = builtin_profile()


def message(*records: str, profile: DeviceProfile = PROFILE) -> DeviceMessage:
    (only,) = to_messages(encode_records(records), profile, "bga", 1.5, 7)
    return only


def test_records_are_split_at_cr_and_fields_at_the_header_s_delimiter() -> None:
    records = split_records(b"H|\\^&|||BGA\rP|1|PID-1\r\nR|1|^^^pH|7.4\rL|1\r")
    assert [r.kind for r in records] == ["H", "P", "R", "L"]
    assert records[2].field(3) == "^^^pH"
    assert records[2].components(3) == ["", "", "", "pH"]
    assert records[1].field(30) == ""


def test_delimiters_declared_by_the_header_are_used_throughout() -> None:
    records = split_records(b"H!@#$\rP!1!PID-7!!!Roe#Ann@Other#Name\r")
    assert records[0].delimiters == Delimiters("!", "@", "#", "$")
    assert records[1].field(3) == "PID-7"
    assert records[1].components(6) == ["Roe", "Ann"]  # first repeat only


def test_escape_sequences_stand_for_the_delimiters() -> None:
    d = Delimiters()
    assert d.unescape("a&F&b&S&c&R&d&E&e") == "a|b^c\\d&e"
    assert d.unescape("&X0D& & &&") == "&X0D& & &&"  # unknown escapes kept as sent
    m = message("H|\\^&", "C|1|I|Ratio 2&S&1 &F& room air|G", "L|1")
    assert m.text == "Comment (message): Ratio 2^1 | room air"


def test_a_p_record_gives_id_name_birth_date_and_sex() -> None:
    m = message("H|\\^&", "P|1|PID-1001|LAB-9||Doe^Jane^Q^III^Dr||19800101|F", "L|1")
    assert m.identity == PatientIdentity(
        patient_id="PID-1001",
        patient_name="Doe^Jane^Q^Dr^III",  # PN: family^given^middle^prefix^suffix
        birth_date="19800101",
        sex="F",
    )


def test_the_laboratory_id_is_used_when_the_practice_id_is_empty() -> None:
    m = message("H|\\^&", "P|1||LAB-9||Roe^Al||1980133|U", "L|1")
    assert m.identity == PatientIdentity(patient_id="LAB-9", patient_name="Roe^Al")


def test_a_message_without_a_p_record_has_an_unknown_identity() -> None:
    m = message("H|\\^&", "R|1|^^^pH|7.40", "L|1")
    assert m.identity == PatientIdentity()
    assert not m.identity.known
    assert len(m.measurements) == 1


def test_a_mapped_result_becomes_a_coded_measurement_with_ucum_unit() -> None:
    m = message("H|\\^&", "R|1|^^^pCO2|38.50|mmHg|35 to 45|H||F||||20240315101412", "L|1")
    (pco2,) = m.measurements
    assert pco2.name == "pCO2"
    assert pco2.concept == Concept(
        "2019-8", "LN", "Carbon dioxide [Partial pressure] in Arterial blood"
    )
    assert pco2.value == "38.50"  # exact, as sent
    assert pco2.unit == "mm[Hg]"
    assert pco2.flags == ("H", "F")
    assert pco2.observed_at == "20240315101412"
    assert m.text is None
    assert (m.kind, m.source, m.received_at, m.sequence) == ("measurements", "bga", 1.5, 7)
    assert m.title == PROFILE.output.document_title.meaning


def test_an_unmapped_result_is_kept_as_text_not_dropped() -> None:
    m = message("H|\\^&", "R|1|^^^COHb|1.2|%||N||F", "L|1")
    assert m.measurements == ()
    assert m.text == "COHb 1.2 % [N F]"


def test_a_unit_the_profile_does_not_list_is_kept_as_text_not_converted() -> None:
    m = message("H|\\^&", "R|1|^^^GLU|7.8|mmol/L", "L|1")
    assert m.measurements == ()
    assert m.text == "GLU 7.8 mmol/L"


def test_a_value_that_is_not_a_decimal_is_kept_as_text() -> None:
    m = message("H|\\^&", "R|1|^^^GLU|>500|mg/dL", "R|2|^^^K|12345678901234567|mmol/L", "L|1")
    assert m.measurements == ()
    assert m.text == "GLU >500 mg/dL\nK 12345678901234567 mmol/L"


def test_a_unitless_mapping_accepts_an_empty_unit() -> None:
    (ph,) = message("H|\\^&", "R|1|^^^pH|7.41", "L|1").measurements
    assert ph.unit == "[pH]"


def test_an_invalid_date_time_is_left_out() -> None:
    (ph,) = message("H|\\^&", "R|1|^^^pH|7.41||||F||||20241345", "L|1").measurements
    assert ph.observed_at is None


def test_comments_are_kept_with_what_they_follow() -> None:
    m = message(
        "H|\\^&",
        "P|1|PID-1",
        "C|1|L|Fasting^since^midnight|G",
        "R|1|^^^pH|7.41",
        "C|1|I|Repeat advised|G",
        "L|1",
    )
    assert m.text == "Comment (patient): Fasting since midnight\nComment (pH): Repeat advised"


def test_each_patient_in_a_message_becomes_its_own_message() -> None:
    stream = encode_records(
        [
            "H|\\^&|||BGA",
            "P|1|PID-1",
            "R|1|^^^pH|7.40",
            "P|2|PID-2",
            "R|1|^^^pH|7.30",
            "R|2|^^^COHb|3",
            "L|1|N",
        ]
    )
    first, second = to_messages(stream, PROFILE, "bga", 0.0, 1)
    assert first.identity.patient_id == "PID-1"
    assert [x.value for x in first.measurements] == ["7.40"]
    assert second.identity.patient_id == "PID-2"
    assert [x.value for x in second.measurements] == ["7.30"]
    assert second.text == "COHb 3"
    assert first.raw == b"H|\\^&|||BGA\rP|1|PID-1\rR|1|^^^pH|7.40\rL|1|N\r"
    assert first.digest_input != second.digest_input


def test_non_ascii_names_decode_as_utf8_or_latin1() -> None:
    utf8 = to_messages(b"H|\\^&\rP|1|P1|||M\xc3\xbcller^Hans\rL|1\r", PROFILE, "x", 0.0, 1)
    latin1 = to_messages(b"H|\\^&\rP|1|P1|||M\xfcller^Hans\rL|1\r", PROFILE, "x", 0.0, 1)
    assert utf8[0].identity.patient_name == latin1[0].identity.patient_name == "Müller^Hans"


def test_encode_records_ends_each_record_with_cr_and_skips_blank_lines() -> None:
    assert encode_records(["", "H|\\^&", "  ", "L|1\n"]) == b"H|\\^&\rL|1\r"
    with pytest.raises(ValueError, match="control character"):
        encode_records(["C|1|I|a\x03b"])


def test_the_terminator_is_recognised_only_as_the_last_record() -> None:
    assert ends_with_terminator(b"H|\\^&\rL|1|N\r")
    assert ends_with_terminator(b"H!@#$\rL!1\r")
    assert ends_with_terminator(b"H|\\^&\rL\r")
    assert not ends_with_terminator(b"H|\\^&\rL|1\rP|1\r")
    assert not ends_with_terminator(b"H|\\^&\rLIS|1\r")
    assert not ends_with_terminator(b"")


def test_the_builtin_profile_s_messages_have_every_record_kind_and_lose_nothing() -> None:
    streams = simulator_messages(PROFILE)
    assert len(streams) >= 3
    for stream in streams:
        kinds = {r.kind for r in split_records(stream)}
        assert {"H", "P", "O", "R", "C", "L"} <= kinds
        (m,) = to_messages(stream, PROFILE, "bga", 0.0, 1)
        results = [r for r in split_records(stream) if r.kind == "R"]
        comments = [r for r in split_records(stream) if r.kind == "C"]
        text_lines = (m.text or "").splitlines()
        assert len(m.measurements) + len(text_lines) == len(results) + len(comments)
        assert m.measurements and m.identity.known
    assert any(len(f) > 240 for s in streams for f in s.split(b"\r"))  # exercises ETB frames


def test_the_builtin_profile_maps_to_loinc_and_ucum() -> None:
    assert PROFILE.link.protocol == "astm-e1394"
    for m in PROFILE.measurement:
        assert m.concept.scheme == "LN"
        assert all(" " not in u for u in (m.unit, *m.device_units.values()))


def test_a_resent_message_has_the_same_uid_input_whenever_it_arrives() -> None:
    # ASTM devices resend what was not acknowledged: the resend must be the same instance.
    stream = b"H|\\^&\rP|1|P1|||Doe^Jane\rR|1|^^^PH|7.40|[pH]\rL|1\r"
    (first,) = to_messages(stream, PROFILE, "bga", 10.0, 1)
    (resent,) = to_messages(stream, PROFILE, "bga", 500.0, 2)
    assert first.resent_until_acknowledged
    assert first.digest_input == resent.digest_input
