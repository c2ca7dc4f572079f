"""Presentation context planning and routing."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)

from gateway.forward.contexts import (
    MAX_CONTEXTS,
    ContextPlan,
    Route,
    choose_route,
    contexts_for,
    conversion_failed_reason,
    conversion_note,
    no_route_reason,
)

CT, SC = str(CTImageStorage), str(SecondaryCaptureImageStorage)
ELE, ILE, JPEG = str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian), str(JPEGBaseline8Bit)
BE, J2K = str(ExplicitVRBigEndian), str(JPEG2000)


def test_an_object_asks_for_its_own_syntax_then_both_fallbacks_separately() -> None:
    assert contexts_for(SC, JPEG) == [(SC, JPEG), (SC, ELE), (SC, ILE)]
    assert contexts_for(CT, ELE) == [(CT, ELE), (CT, ILE)]


def test_the_plan_proposes_the_union_of_what_objects_needed() -> None:
    plan = ContextPlan()
    plan.want(CT, ELE)
    plan.want(SC, JPEG)
    plan.want(CT, ELE)
    assert set(plan.proposal()) == {(CT, ELE), (CT, ILE), (SC, JPEG), (SC, ELE), (SC, ILE)}


def test_the_plan_never_exceeds_128_contexts_and_keeps_the_newest() -> None:
    plan = ContextPlan()
    for i in range(100):
        plan.want(f"1.2.3.{i}", ELE)
    proposal = plan.proposal()
    assert len(proposal) == MAX_CONTEXTS
    assert ("1.2.3.99", ELE) in proposal
    assert ("1.2.3.0", ELE) not in proposal


def test_forgetting_a_sop_class_removes_all_its_contexts() -> None:
    plan = ContextPlan()
    plan.want(CT, ELE)
    plan.want(SC, JPEG)
    plan.forget(SC)
    assert plan.proposal() == [(CT, ELE), (CT, ILE)]


def test_routes() -> None:
    assert choose_route({(SC, JPEG)}, SC, JPEG) is Route.AS_STORED
    assert choose_route({(SC, ELE)}, SC, JPEG) is Route.DECODE
    assert choose_route({(SC, ILE)}, SC, JPEG) is Route.DECODE
    assert choose_route({(CT, ILE)}, CT, ELE) is Route.REENCODE
    assert choose_route({(CT, ELE)}, CT, str(DeflatedExplicitVRLittleEndian)) is Route.REENCODE
    assert choose_route({(CT, ELE)}, SC, JPEG) is Route.NONE
    assert choose_route({(CT, ELE)}, CT, "1.2.3.4.5") is Route.NONE


def test_big_endian_goes_byte_swapped_to_a_pacs_taking_little_endian() -> None:
    # Issue 10 A4: this was Route.NONE, so big-endian objects never reached such a PACS.
    assert choose_route({(CT, ELE)}, CT, BE) is Route.TO_LITTLE_ENDIAN
    assert choose_route({(CT, ILE)}, CT, BE) is Route.TO_LITTLE_ENDIAN
    assert choose_route({(CT, BE)}, CT, BE) is Route.AS_STORED
    assert choose_route({(CT, JPEG)}, CT, BE) is Route.NONE


def test_no_route_reason_names_what_the_pacs_accepted_and_what_to_enable() -> None:
    only_jpeg = no_route_reason({(SC, JPEG)}, SC, "1.2.3.4.5")
    assert "accepts Secondary Capture Image Storage only as JPEG Baseline (Process 1)" in only_jpeg
    assert "cannot convert 1.2.3.4.5" in only_jpeg
    assert "enable 1.2.3.4.5 or Explicit VR Little Endian" in only_jpeg
    # Not "none of the transfer syntaxes we can send" when one we can send was accepted:
    assert "none of" not in only_jpeg
    nothing = no_route_reason({(CT, ELE)}, SC, JPEG)
    assert "accepted Secondary Capture Image Storage in none of the proposed" in nothing
    assert "JPEG Baseline (Process 1), Explicit VR Little Endian, Implicit VR Little Endian" in (
        nothing
    )
    assert "enable Secondary Capture Image Storage" in nothing


def test_conversion_reasons_name_the_step_the_cause_and_the_remedy() -> None:
    decode = conversion_failed_reason(Route.DECODE, SC, J2K, "broken data stream")
    assert decode.startswith(
        "cannot decode JPEG 2000 Image Compression pixel data for a PACS that accepts "
        "Secondary Capture Image Storage only uncompressed: broken data stream; "
        "enable JPEG 2000 Image Compression for Secondary Capture Image Storage on the PACS"
    )
    swap = conversion_failed_reason(Route.TO_LITTLE_ENDIAN, CT, BE, "odd length")
    assert swap.startswith("cannot convert Explicit VR Big Endian to little endian")
    assert conversion_note(Route.TO_LITTLE_ENDIAN, BE) == (
        "converted from Explicit VR Big Endian to Explicit VR Little Endian: "
        "the PACS does not accept big endian"
    )
    assert conversion_note(Route.REENCODE, ELE) == ""
