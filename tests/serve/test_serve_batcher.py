"""DynamicBatcher and score_jobs without HTTP: batching, length grouping, error isolation, backpressure."""
import asyncio
import threading

import pytest
import torch
from serve_toys import ToyConfig, ToyStepScorer, ToyTextScorer, assert_same_scores

from mmreward.core.inputs import StepSolution, TextPair
from mmreward.ops import refine_process_rewards
from mmreward.serve.batcher import DynamicBatcher, InputRejected, Job, QueueFull, score_jobs
from mmreward.serve.protocol import refine_parts


def pairs(n, words=3, tag="q"):
    return [TextPair(f"{tag}{i}", " ".join(f"w{i}_{k}" for k in range(words + i % 5))) for i in range(n)]


def test_concurrent_requests_share_forwards_and_get_their_own_scores():
    model = ToyTextScorer()
    items = pairs(24)
    expected = model.score(items).tolist()
    model.forwards.clear()

    async def main():
        b = DynamicBatcher(model, max_batch=8, max_wait_ms=50, max_queue=64, max_padding=None)
        try:
            return await asyncio.gather(*(b.score([it]) for it in items))
        finally:
            b.close()

    got = asyncio.run(main())
    assert_same_scores([g[0] for g in got], expected)  # nothing swapped, nothing lost
    sizes = [len(f) for f in model.forwards]
    assert sum(sizes) == 24 and max(sizes) == 8 and len(sizes) <= 6  # batched, never above max_batch


def test_a_large_request_is_split_into_forwards_of_max_batch():
    model = ToyTextScorer()
    items = pairs(21)
    expected = model.score(items).tolist()
    model.forwards.clear()

    async def main():
        b = DynamicBatcher(model, max_batch=5, max_wait_ms=1, max_queue=64)
        try:
            return await b.score(items)
        finally:
            b.close()

    assert_same_scores(asyncio.run(main()), expected)
    assert max(len(f) for f in model.forwards) == 5


def test_backlog_is_grouped_by_length_into_forwards():
    model = ToyTextScorer()
    short, long_ = pairs(4, words=1, tag="s"), pairs(4, words=40, tag="l")
    jobs = [Job([it], "scores") for pair in zip(long_, short) for it in pair]  # long, short, long, short, ...
    outcomes = score_jobs(model, jobs, max_batch=4)
    assert_same_scores([o[0] for o in outcomes], model.score([j.items[0] for j in jobs]).tolist())
    first, second = model.forwards[:2]
    assert all(t.startswith("s") for t in first) and all(t.startswith("l") for t in second)


def test_forwards_are_cut_where_padding_would_cost_more_than_max_padding():
    model = ToyTextScorer()
    items = [TextPair(f"s{i}", "two words") for i in range(3)] + [TextPair(f"l{i}", "many words " * 20) for i in range(3)]
    jobs = [Job([it], "scores") for it in items]
    score_jobs(model, jobs, max_batch=8, max_padding=0.25)
    assert [len(f) for f in model.forwards] == [3, 3]  # short and long apart, though 8 would fit
    model.forwards.clear()
    score_jobs(model, jobs, max_batch=8, max_padding=None)
    assert [len(f) for f in model.forwards] == [6]


def test_a_failing_input_fails_only_its_own_request():
    model = ToyTextScorer()
    good = pairs(6)
    bad = TextPair("q", "this will explode now")
    jobs = [Job([good[0], good[1]], "scores"), Job([bad, good[2]], "scores"), Job(good[3:], "scores")]
    settled = {}
    outcomes = score_jobs(model, jobs, max_batch=8, on_done=lambda j, out: settled.setdefault(j, out))
    assert isinstance(outcomes[1], InputRejected) and "explode" in str(outcomes[1])
    assert_same_scores(outcomes[0] + outcomes[2], model.score(good[:2] + good[3:]).tolist())
    assert settled == dict(enumerate(outcomes))  # each job settled exactly once


def test_parts_mode_and_server_side_refinement_match_the_op():
    model = ToyStepScorer()
    items = [StepSolution("p1", ["a", "b c", "d"]), StepSolution("p2", ["e f"])]
    (parts_a, parts_b), = [score_jobs(model, [Job(items[:1], "parts"), Job(items[1:], "parts")], max_batch=4)]
    offline = [t.tolist() for t in model.score_parts(items)]
    assert_same_scores([v for p in parts_a + parts_b for v in p], [v for p in offline for v in p])
    refined = refine_parts(offline, {"clip": 0.1, "delta": True, "gamma": 0.9})
    flat = torch.tensor([v for p in offline for v in p])
    want_r, want_g = refine_process_rewards(flat, torch.tensor([3, 1]), clip=0.1, delta=True, gamma=0.9)
    assert refined["step_rewards"] == [want_r[:3].tolist(), want_r[3:].tolist()]
    assert refined["scores"] == [want_g[0].item(), want_g[3].item()]


def test_full_queue_refuses_at_once_and_cancelled_requests_are_skipped():
    model = ToyTextScorer(ToyConfig(delay_s=0.3))
    items = pairs(6)

    async def main():
        b = DynamicBatcher(model, max_batch=2, max_wait_ms=0, max_queue=4)
        try:
            first = asyncio.ensure_future(b.score(items[:2]))  # taken by the worker: 0.3 s forward
            await asyncio.sleep(0.1)
            queued = asyncio.ensure_future(b.score(items[2:4]))
            await asyncio.sleep(0.01)
            doomed = asyncio.ensure_future(b.score(items[4:6]))
            await asyncio.sleep(0.01)
            with pytest.raises(QueueFull):
                await b.score(items[:1])
            doomed.cancel()  # the client went away before its forward
            return await first, await queued
        finally:
            b.close()

    first, queued = asyncio.run(main())
    assert_same_scores(first + queued, model.score(items[:4]).tolist())
    scored = [t for f in model.forwards for t in f]
    assert not any(t.startswith(("q4 ", "q5 ")) for t in scored)  # items 4-5 never reached a forward


def test_close_finishes_queued_requests():
    model = ToyTextScorer(ToyConfig(delay_s=0.05))
    items = pairs(10)
    results = {}

    async def main():
        b = DynamicBatcher(model, max_batch=2, max_wait_ms=0, max_queue=64)
        tasks = [asyncio.ensure_future(b.score([it])) for it in items]
        await asyncio.sleep(0.01)
        closer = threading.Thread(target=b.close)
        closer.start()
        for i, t in enumerate(tasks):
            results[i] = (await t)[0]
        closer.join()
        with pytest.raises(QueueFull, match="shutting down"):
            await b.score(items[:1])

    asyncio.run(main())
    assert_same_scores([results[i] for i in range(10)], model.score(items).tolist())


@pytest.mark.parametrize("kw, words", [
    (dict(max_wait_ms=float("inf")), r"max_wait_ms must be a number in \[0, 3.6e\+06\], got inf"),
    (dict(max_wait_ms=float("nan")), "max_wait_ms must be a number.*got nan"),
    (dict(max_wait_ms=-1.0), "max_wait_ms must be a number.*got -1.0"),
    (dict(max_batch=0), "max_batch must be an integer >= 1, got 0"),
])
def test_settings_that_would_hang_or_break_the_worker_are_refused(kw, words):
    # an infinite wait raised OverflowError inside the worker thread, which died: every request then hung
    with pytest.raises(ValueError, match=words):
        DynamicBatcher(ToyTextScorer(), **kw)
