"""AI-drafted steps through the Anthropic simulator: one draft per recipient written while the
step sleeps, the user's edit sent instead of the original, the template when no model
answers, and a stream that keeps breaking leaving the step waiting for the user's edit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from roleferry.drafting.models import Draft
from roleferry.outreach.models import Enrollment, SequenceSend, TimelineEntry
from tests.outreach.lab import Lab

DAY = 86_400.0
PEOPLE = [
    {"email": "ann@acme.org", "first_name": "Ann", "last_name": "Lee", "company": "Acme"},
    {"email": "bob@initech.org", "first_name": "Bob", "last_name": "Ng", "company": "Initech"},
]


async def ai_sequence(lab: Lab) -> Any:
    """Step 0 a template, step 1 an AI draft a day later."""
    sequence = await lab.sequence(await lab.sender(), steps=1)
    steps = [
        *sequence.steps,
        {"delay_s": DAY, "ai_draft": {"role": "Data Engineer", "about": "I build pipelines"}},
    ]
    async with lab.db.write_session() as session:
        stored = await session.get(type(sequence), sequence.id)
        assert stored is not None
        stored.steps = steps
    sequence.steps = steps
    return sequence


async def timeline(lab: Lab, email: str) -> list[tuple[str, str | None]]:
    async with lab.db.session() as session:
        rows = await session.execute(
            select(TimelineEntry.kind, TimelineEntry.detail)
            .join(Enrollment, Enrollment.id == TimelineEntry.enrollment_id)
            .where(Enrollment.email == email)
            .order_by(TimelineEntry.id)
        )
        return [(k, d) for k, d in rows.all()]


async def drafts_of(lab: Lab) -> dict[str, Draft]:
    async with lab.db.session() as session:
        rows = await session.execute(
            select(SequenceSend.email, Draft).join(Draft, Draft.id == SequenceSend.draft_id)
        )
        return dict(rows.all())


async def test_each_recipient_gets_its_own_draft_written_before_the_step_is_due(
    lab: Lab,
) -> None:
    """The first tick drafts step 1 for both contacts while it sleeps; a day later each
    gets its own model-written email (its name in it), not the other's."""
    await lab.enroll(await ai_sequence(lab), PEOPLE)
    result = await lab.tick()
    assert result.drafted == 2
    assert result.sent == 2
    drafts = await drafts_of(lab)
    assert {d.source for d in drafts.values()} == {"model"}
    assert "Ann" in (drafts["ann@acme.org"].body or "")
    lab.clock.advance(DAY)
    assert (await lab.tick()).sent == 2
    for person in PEOPLE:
        step1 = [m for m in lab.mail(person["email"]) if m["custom_args"]["step"] == "1"]
        assert len(step1) == 1
        draft = drafts[person["email"]]
        assert step1[0]["subject"] == draft.subject
        assert step1[0]["body"] == draft.body
    kinds = [k for k, _ in await timeline(lab, "ann@acme.org")]
    assert kinds.index("drafted") < kinds.index("sent")


async def test_the_users_edit_goes_instead_of_the_draft(lab: Lab) -> None:
    await lab.enroll(await ai_sequence(lab), PEOPLE[:1])
    await lab.tick()
    draft = (await drafts_of(lab))["ann@acme.org"]
    async with lab.db.write_session() as session:
        await session.execute(
            update(Draft)
            .where(Draft.id == draft.id)
            .values(edited_subject="Edited subject", edited_body="Edited body, Ann.")
        )
    lab.clock.advance(DAY)
    await lab.tick()
    step1 = [m for m in lab.mail("ann@acme.org") if m["custom_args"]["step"] == "1"]
    assert [(m["subject"], m["body"]) for m in step1] == [("Edited subject", "Edited body, Ann.")]


async def test_anthropic_down_falls_back_to_the_template_and_says_so(lab: Lab) -> None:
    """Every model refused: the drafting service's template goes, and the timeline says the
    draft is the template because no model could write it."""
    lab.sb.control("anthropic", down=True)
    await lab.enroll(await ai_sequence(lab), PEOPLE[:1])
    assert (await lab.tick()).drafted == 1
    draft = (await drafts_of(lab))["ann@acme.org"]
    assert draft.source == "template"
    assert ("drafted", "template: no model could write it") in await timeline(lab, "ann@acme.org")
    lab.clock.advance(DAY)
    await lab.tick()
    step1 = [m for m in lab.mail("ann@acme.org") if m["custom_args"]["step"] == "1"]
    assert [m["body"] for m in step1] == [draft.body]
    assert (draft.body or "").startswith("Hi Ann,")


async def test_a_stream_that_keeps_breaking_leaves_the_step_waiting_for_an_edit(
    lab: Lab,
) -> None:
    """Cut after 3 tokens twice: retried once with a fresh draft, then the step waits
    (`waiting_for: draft`, nothing sent, the enrolment still active); once the user edits
    the partial draft, it goes with the edit and the wait is cleared."""
    lab.sb.control("anthropic", stream_faults=[{"kind": "cut", "after_tokens": 3, "times": 2}])
    await lab.enroll(await ai_sequence(lab), PEOPLE[:1])
    await lab.tick()
    await lab.tick()
    lab.clock.advance(DAY)
    assert (await lab.tick()).sent == 0
    enrollment = await lab.enrollment("ann@acme.org")
    assert (enrollment.status, enrollment.waiting_for) == ("active", "draft")
    kinds = [k for k, _ in await timeline(lab, "ann@acme.org")]
    assert kinds.count("draft_retry") == 1
    assert kinds.count("draft_incomplete") == 1
    draft = (await drafts_of(lab))["ann@acme.org"]
    assert draft.status == "incomplete"
    assert draft.partial_text
    assert [m["custom_args"]["step"] for m in lab.mail("ann@acme.org")] == ["0"]
    async with lab.db.write_session() as session:
        await session.execute(
            update(Draft)
            .where(Draft.id == draft.id)
            .values(edited_subject="Data Engineer at Acme", edited_body="Finished by hand.")
        )
    lab.clock.advance(60)
    assert (await lab.tick()).sent == 1
    assert lab.mail("ann@acme.org")[-1]["body"] == "Finished by hand."
    assert (await lab.enrollment("ann@acme.org")).waiting_for is None


async def test_contacts_without_a_name_are_rejected_from_an_ai_sequence(lab: Lab) -> None:
    run = await lab.enroll(await ai_sequence(lab), [{"email": "x@acme.org"}, PEOPLE[0]])
    assert run.total == 1
    assert run.rejected == [
        {"email": "x@acme.org", "reason": "an AI-drafted step needs first_name or last_name"}
    ]


async def test_no_draft_is_written_for_a_recipient_who_will_never_be_mailed(lab: Lab) -> None:
    """A suppressed address and a blocked one: their enrolments end at the first claim, and no
    model is asked for them (an AI draft costs credits), while the third is drafted."""
    from roleferry.outreach.models import Suppression, UserBlock

    async with lab.db.write_session() as session:
        session.add(Suppression(email="ann@acme.org", reason="spam_report", source_event="t"))
        session.add(UserBlock(user_id=lab.user_id, email="bob@initech.org", reason="blocklist"))
    third = {"email": "cy@globex.org", "first_name": "Cy", "last_name": "Ro", "company": "Globex"}
    await lab.enroll(await ai_sequence(lab), [*PEOPLE, third])
    await lab.tick()
    assert set(await drafts_of(lab)) == {"cy@globex.org"}
    async with lab.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Draft)) == 1
