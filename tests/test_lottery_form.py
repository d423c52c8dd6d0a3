"""The guided lottery form (a bare /lottery) through the real Application: the prize as a reply,
buttons for winners and draw, a preview, Start — the same lottery as the one-line command;
someone else's presses, forged or expired tokens and non-operators change nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from bot.lottery import LOTTERY, Lottery
from bot.lottery_form import LotteryForm
from tests import factories as f
from tests.recording import BOT_USER
from tests.test_lottery import ADMIN, ALICE, GROUP, answers, setup_group


async def the_form(tg) -> LotteryForm | None:
    async with tg.db() as session:
        return await session.scalar(select(LotteryForm))


def reply_to_bot(tg, sender: dict, prompt_id: int, text: str) -> dict:
    question = f.message_dict(GROUP, BOT_USER, "prize?", date=tg.now(), message_id=prompt_id)
    return f.message(GROUP, sender, text, date=tg.now(), reply_to_message=question)


def press(tg, sender: dict, data: str) -> dict:
    step = f.message_dict(GROUP, BOT_USER, "form", date=tg.now())
    return f.callback(sender, data, message=step)


def buttons(call) -> list[str]:
    markup = call.params.get("reply_markup") or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


async def lotteries(tg) -> list[Lottery]:
    async with tg.db() as session:
        return list(await session.scalars(select(Lottery)))


async def test_the_form_makes_the_same_lottery_as_the_one_line_command(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/lottery", date=tg.now()))
    (question,) = tg.api.of("sendMessage")
    assert "reply to this message" in question.params["text"]
    assert question.params["reply_markup"] == {"force_reply": True, "selective": True}
    form = await the_form(tg)
    assert form is not None and form.prompt_id is not None and form.user_id == ADMIN["id"]

    await tg.feed(reply_to_bot(tg, ADMIN, form.prompt_id, "Mechanical | keyboard <b>"))
    step2 = tg.api.of("sendMessage")[-1]
    assert "Mechanical / keyboard &lt;b&gt;" in step2.params["text"]  # escaped, no option
    token = form.token
    assert buttons(step2) == [f"lotform:{token}:w:{n}" for n in (1, 2, 3, 5, 10)] + [
        f"lotform:{token}:x"
    ]

    await tg.feed(press(tg, ADMIN, f"lotform:{token}:w:3"))
    step3 = tg.api.of("editMessageText")[-1]
    assert "3 winner(s)" in step3.params["text"]
    assert f"lotform:{token}:d:6h" in buttons(step3)

    await tg.feed(press(tg, ADMIN, f"lotform:{token}:d:6h"))
    preview = tg.api.of("editMessageText")[-1]
    assert (
        "in 6 hours" in preview.params["text"] and "Lucky &lt;Group&gt;" in preview.params["text"]
    )
    assert buttons(preview) == [f"lotform:{token}:go", f"lotform:{token}:x"]
    assert await lotteries(tg) == []  # nothing until Start

    for _ in range(3):  # pressed three times: one lottery
        await tg.feed(press(tg, ADMIN, f"lotform:{token}:go"))
    (lottery,) = await lotteries(tg)
    assert (lottery.prize, lottery.winners) == ("Mechanical / keyboard <b>", 3)
    assert lottery.draw_at is not None
    assert abs(lottery.draw_at - (tg.now() + timedelta(hours=6))) < timedelta(seconds=5)
    post = [c for c in tg.api.of("sendMessage") if "lottery:join" in str(c.params)]
    assert len(post) == 1 and post[0].params["chat_id"] == GROUP["id"]
    assert await the_form(tg) is None
    assert "expired" in answers(tg.api)[-1]["text"]  # the later presses


async def test_other_people_forged_tokens_and_cancel_change_nothing(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/lottery", date=tg.now()))
    form = await the_form(tg)
    assert form is not None
    await tg.feed(reply_to_bot(tg, ALICE, form.prompt_id, "My own prize"))  # not the operator
    assert (await the_form(tg)).prize is None
    await tg.feed(reply_to_bot(tg, ADMIN, form.prompt_id, "Hat"))
    token = form.token
    tg.api.clear()

    await tg.feed(press(tg, ALICE, f"lotform:{token}:w:2"))
    assert "Only the operator who opened this form" in answers(tg.api)[-1]["text"]
    await tg.feed(press(tg, ADMIN, "lotform:forged:w:2"))
    await tg.feed(press(tg, ADMIN, f"lotform:{token}:w:7"))  # not a choice offered
    await tg.feed(press(tg, ADMIN, f"lotform:{token}:go"))  # skipping steps
    assert all(a.get("show_alert") for a in answers(tg.api))
    assert tg.api.of("editMessageText") == []
    assert (await the_form(tg)).winners is None

    await tg.feed(press(tg, ADMIN, f"lotform:{token}:x"))
    assert "cancelled" in tg.api.of("editMessageText")[-1].params["text"]
    assert await the_form(tg) is None
    async with tg.db() as session:
        assert await session.scalar(select(func.count()).select_from(LOTTERY)) == 0


async def test_a_form_expires_and_an_operator_who_lost_the_rights_cannot_finish(tg):
    await setup_group(tg)
    await tg.feed(f.message(GROUP, ADMIN, "/lottery", date=tg.now()))
    form = await the_form(tg)
    await tg.feed(reply_to_bot(tg, ADMIN, form.prompt_id, "Hat"))
    await tg.feed(press(tg, ADMIN, f"lotform:{form.token}:w:1"))
    tg.api.set_admins(GROUP["id"])  # demoted
    tg.clock.advance(minutes=11)  # the operator list is cached for 10 minutes
    await tg.feed(press(tg, ADMIN, f"lotform:{form.token}:d:1h"))
    assert "operators" in answers(tg.api)[-1]["text"]
    tg.api.set_admins(GROUP["id"], ADMIN)
    tg.clock.advance(minutes=16)  # and the form is older than 15 minutes
    await tg.feed(press(tg, ADMIN, f"lotform:{form.token}:d:1h"))
    assert "expired" in answers(tg.api)[-1]["text"]
    assert await lotteries(tg) == []
