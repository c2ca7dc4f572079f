"""Presentation context planning and routing."""

from __future__ import annotations

from pydicom.uid import (
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
)

CT, SC = str(CTImageStorage), str(SecondaryCaptureImageStorage)
ELE, ILE, JPEG = str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian), str(JPEGBaseline8Bit)


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
    assert choose_route({(CT, ELE)}, CT, str(ExplicitVRBigEndian)) is Route.NONE
    assert choose_route({(CT, ELE)}, CT, "1.2.3.4.5") is Route.NONE
