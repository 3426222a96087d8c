"""One sweep of the `score` contract over a tiny instance of every registered model type, from the
outside: batch_size never changes a score, bad batch sizes are one clear error, scores are float32 on
the CPU, train mode / dropout / grad modes of the caller do not leak into (or out of) scoring, dtype
casts score or fail clearly, save_pretrained → mmreward.load scores the same, and a failed call leaves
the model able to score again."""
import os
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

HERE = os.path.dirname(os.path.abspath(__file__))
for sub in ("text", "vision", "robotics"):
    if os.path.join(HERE, sub) not in sys.path:
        sys.path.insert(0, os.path.join(HERE, sub))

import mmreward  # noqa: E402
from mmreward.core.device import DeviceError, resolve_dtype  # noqa: E402
from mmreward.core.inputs import Comparison, Episode, ImagePrompt, StepSolution, TextPair  # noqa: E402
from mmreward.core.model import RewardScorer  # noqa: E402
from mmreward.registry import MODEL_TYPES  # noqa: E402


# ------------------------------------------------------------------ tiny builders: (model, inputs)
_TMP = []


@pytest.fixture(scope="module", autouse=True)
def _scratch_root(tmp_path_factory):
    _TMP[:] = [tmp_path_factory.mktemp("sweep")]
    yield
    _CACHE.clear()


def _scratch(name):
    """A new folder under pytest's temporary folder (published layouts are built as files)."""
    import tempfile

    return tempfile.mkdtemp(prefix=f"{name}-", dir=str(_TMP[0]))


def _text_rm():
    from text_rm_fixtures import llama_config, word_tokenizer

    from mmreward.text import RewardModel

    torch.manual_seed(0)
    m = RewardModel.from_backbone(llama_config(), tokenizer=word_tokenizer())
    return m, [TextPair("what is two plus three", "five"), TextPair("a", "b c a b d"), TextPair("b c", "six")]


def _prm():
    from mmreward.text.prm.model import ProcessRewardModel
    from mmreward.text.prm.synthetic import char_tokenizer, tiny_llama

    tok = char_tokenizer("char")
    m = ProcessRewardModel.from_backbone(tiny_llama(tok, hidden=32, layers=1, heads=2, seed=0), tok, max_length=160)
    return m, [StepSolution("3 +4 -2", ["3+4=7", "7-2=5"]), StepSolution("5 -1", ["5-1=4"]),
               StepSolution("1+1", ["1+1=2", "2", "done"])]


def _judge(kind):
    def build():
        from test_gen_contract import WORDS, build as gen_build

        from mmreward.text.generative.tiny import word_tokenizer

        judge = gen_build(kind, word_tokenizer([WORDS]))
        if judge.input_types[0] is Comparison:
            items = [Comparison("q0", "good fine", "bad"), Comparison("q1", "poor", "good"),
                     Comparison("q2", "fine", "bad poor")]
        else:
            items = [TextPair("q0", "good fine"), TextPair("q1", "bad"), TextPair("q2", "fine poor good")]
        return judge, items
    return build


def _vision(kind):
    def build():
        from test_vision_contract import build as vision_build

        return vision_build(kind)
    return build


def _clip_scorer():
    from test_published_mixed_batches import clip_scorer

    rng = np.random.default_rng(0)
    return clip_scorer(), [ImagePrompt("a cat", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(3)]


def _blip():
    from test_published_mixed_batches import blip_scorer

    rng = np.random.default_rng(0)
    return blip_scorer(), [ImagePrompt("a cat", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(3)]


def _hpsv3():
    from test_published_more_vision import build_official

    folder = os.path.join(_scratch("hpsv3"), "HPSv3")
    build_official(folder)
    rng = np.random.default_rng(0)
    return mmreward.load(folder), [ImagePrompt(w, rng.integers(0, 256, (56, 84, 3), dtype=np.uint8))
                                   for w in ("a cat", "a red square", "two dogs")]


def _frames(T, seed):
    return torch.randint(0, 256, (T, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _ranker():
    from test_reward_contract import fitted_ranker

    return fitted_ranker(), [Episode(_frames(4, s)) for s in range(3)]


def _rnd():
    from mmreward.robotics.reward import RND, RNDConfig

    torch.manual_seed(0)
    rnd = RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=16, hidden_dim=16))
    rnd.update(_frames(4, 0))
    return rnd, [Episode(_frames(4, s)) for s in range(3)]


def _diffusion_reward():
    from test_diffusion_reward import frames, make_reward

    # entropy mode without chain noise: the modes that draw noise per batch depend on the batch by design
    dr = make_reward(reward_type="entropy", noise=False)
    dr.fit_statistics([frames(6, s) for s in range(2)])
    dr.update_rnd(frames(6, 3))
    return dr, [Episode(_frames(4, s)) for s in range(3)]


def _armo():
    import test_armo as A

    folder = os.path.join(_scratch("armo"), "ArmoRM-Llama3-8B-v0.1")
    _armo_folder(A, folder)  # test_armo's fixture, as a plain function
    return mmreward.load(folder), list(A.PAIRS)[:3]


def _armo_folder(A, folder):
    tok = A.llama3_like_tokenizer()
    cfg = A.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, num_objectives=A.K,
                        gating_hidden_dim=16, gating_n_hidden=2, gating_temperature=10)
    torch.manual_seed(0)
    model = A.LlamaForRewardModelWithGating(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.config.auto_map = {"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"}
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def _qwen_vl():
    from published_fixtures import qwen_vl_reward_folder, write_images

    from mmreward.core.inputs import Conversation

    root = _scratch("qwen-vl")
    folder = qwen_vl_reward_folder(os.path.join(root, "Skywork-VL-Reward-7B"))
    images = write_images(root)
    turns = lambda i, answer: [  # noqa: E731
        {"role": "user", "content": [{"type": "image", "image": images[i]}, {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": answer}]
    return mmreward.load(folder), [Conversation(turns(0, "red")), Conversation(turns(1, "The answer is blue")),
                                   Conversation(turns(2, "green"))]


BUILDERS = {
    "text_reward_model": _text_rm,
    "process_reward_model": _prm,
    "genrm": _judge("genrm"), "gram": _judge("gram"), "rm_r1": _judge("rm_r1"), "critic_rm": _judge("critic_rm"),
    "image_reward": _vision("image_reward-conv"), "image_reward-clip": _vision("image_reward-clip"),
    "vlm_reward": _vision("vlm_reward"), "visual_prm": _vision("visual_prm"),
    "armo_rm": _armo, "qwen_vl_reward": _qwen_vl, "hpsv3_reward": _hpsv3, "clip_scorer": _clip_scorer,
    "imagereward_blip": _blip,
    "progress_ranker": _ranker, "rnd": _rnd, "diffusion_reward": _diffusion_reward,
}
# the sampling judges draw per seed and batch (documented): test_sampling_judges_… below
SKIPPED = {"grm", "reward_anything"}
KINDS = list(BUILDERS)


def test_every_registered_type_is_swept_or_skipped_on_purpose():
    assert set(MODEL_TYPES) <= {k.split("-")[0] for k in BUILDERS} | SKIPPED


_CACHE = {}


@pytest.fixture(params=KINDS)
def built(request):
    if request.param not in _CACHE:
        _CACHE[request.param] = BUILDERS[request.param]()
    model, items = _CACHE[request.param]
    model.eval()
    return request.param, model, items


def _close(a, b, kind):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{kind}: {m}")


def test_batch_size_never_changes_a_score(built):
    kind, model, items = built
    base = model.score(items)
    assert base.dtype == torch.float32 and base.device.type == "cpu" and base.shape == (len(items),)
    _close(model.score(items, batch_size=1), base, kind)
    _close(model.score(items, batch_size=len(items)), base, kind)
    _close(model.score(items, batch_size=np.int64(2)), base, kind)
    _close(model.score(items, batch_size=torch.tensor(2)), base, kind)  # a 0-d integer tensor is an integer


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4", torch.tensor(True), torch.tensor([2]), np.array([2])])
def test_a_bad_batch_size_is_one_clear_error_and_the_model_still_scores(built, bad):
    kind, model, items = built
    base = model.score(items)
    with pytest.raises((ValueError, TypeError), match="batch_size"):
        model.score(items, batch_size=bad)
    if model.has_parts():
        with pytest.raises((ValueError, TypeError), match="batch_size"):
            model.score_parts(items, batch_size=bad)
    _close(model.score(items), base, kind)


def test_score_parts_is_per_part_or_one_clear_error(built):
    kind, model, items = built
    if model.has_parts():
        parts = model.score_parts(items)
        assert len(parts) == len(items)
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" and p.dim() == 1 for p in parts)
    else:
        for given in (items, [], [items[0], {"no_such_field": 1}]):  # the reason first, whatever the inputs
            with pytest.raises(TypeError, match="scores whole inputs: it has no per-step or per-frame scores"):
                model.score_parts(given)


def test_train_mode_grad_modes_and_requires_grad(built):
    kind, model, items = built
    base = model.score(items)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    try:
        a, b = model.score(items), model.score(items)
        _close(a, base, kind)  # dropout is off while scoring
        _close(b, a, kind)
        assert model.training, f"{kind}: score put a train-mode model into eval mode for good"
    finally:
        model.eval()
    assert not model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    with torch.inference_mode():
        _close(model.score(items), base, kind)
    with torch.no_grad():
        _close(model.score(items), base, kind)


def test_dtype_casts_score_or_fail_clearly(built):
    kind, _, _ = built
    model, items = BUILDERS[kind]()  # a fresh one: a cast may not round-trip (float64 statistics)
    model.eval()
    base = model.score(items)
    for dtype in (torch.float64, torch.bfloat16, torch.float16):  # the lossless cast first
        model.to(dtype)
        try:
            out = model.score(items)
        except (ValueError, TypeError) as e:  # one clear error, never torch's "mat1 and mat2 …" alone
            assert type(model).__name__ in str(e) or "dtype" in str(e), f"{kind} {dtype}: {e}"
            continue
        assert out.dtype == torch.float32 and out.device.type == "cpu", (kind, dtype)
        assert torch.isfinite(out).all() or not torch.isfinite(base).all(), (kind, dtype, out)
        if dtype == torch.float64:
            _close(out, base, kind)
    assert model.to(torch.float32).score(items).shape == base.shape  # the failed calls broke nothing


def test_scoring_leaves_the_callers_global_state_alone(built):
    import random

    kind, model, items = built
    torch.manual_seed(123)
    np.random.seed(1)
    random.seed(1)
    state = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(), torch.is_grad_enabled(),
             torch.get_default_dtype())
    model.score(items)
    if model.has_parts():
        model.score_parts(items)
    assert torch.equal(state[0], torch.get_rng_state()), f"{kind}: score moved torch's global RNG"
    assert np.array_equal(state[1], np.random.get_state()[1]) and state[2] == random.getstate(), kind
    assert state[3:] == (torch.is_grad_enabled(), torch.get_default_dtype()), kind


@pytest.mark.parametrize("kind", ["grm", "reward_anything"])
def test_sampling_judges_repeat_themselves_at_one_seed_and_batch_size(kind):
    judge, items = _judge(kind)()
    judge.eval()
    for size in (1, 2):
        torch.testing.assert_close(judge.score(items, batch_size=size), judge.score(items, batch_size=size))
    with pytest.raises(ValueError, match="batch_size"):
        judge.score(items, batch_size=0)


def test_save_then_load_scores_the_same_and_bad_input_corrupts_nothing(built, tmp_path):
    kind, model, items = built
    base = model.score(items)
    model.save_pretrained(str(tmp_path / "m"))
    again = mmreward.load(str(tmp_path / "m"))
    assert not again.training or not type(again).eval_after_load  # a loaded RND stays trainable (documented)
    _close(again.score(items), base, kind)
    with pytest.raises((ValueError, TypeError)):
        again.score([items[0], {"no_such_field": 1}])
    _close(again.score(items), base, kind)


# ------------------------------------------------------------------ the base class's dtype guard
class _CastBreaks(RewardScorer, torch.nn.Module):
    """A scorer whose head stays float32 in its forward (as BLIP ImageReward's did): a cast model cannot
    score."""
    model_type, input_types = "cast_breaks", (TextPair,)

    def __init__(self, bug_in_fp32=False):
        super().__init__()
        self.lin, self.bug = torch.nn.Linear(2, 1), bug_in_fp32
        self.register_buffer("statistics", torch.zeros(3, dtype=torch.float64))  # as the episode scorers have

    def _score(self, items, batch_size):
        x = torch.ones(len(items), 2, dtype=torch.float64 if self.bug else torch.float32)
        return self.lin(x).squeeze(-1).detach()


def test_a_model_cast_to_a_dtype_it_cannot_compute_in_is_one_clear_error():
    items = [TextPair("q", "a")]
    model = _CastBreaks().to(torch.bfloat16)
    for call in (model.score,):
        with pytest.raises(TypeError, match=r"_CastBreaks.score: the model does not compute in bfloat16 on cpu "
                                            r"\(mat1 and mat2 .*\): score it in float32 \(load it with dtype='fp32'"):
            call(items)
    assert model.float().score(items).shape == (1,)
    with pytest.raises(RuntimeError, match="mat1 and mat2") as e:  # a float32 model's own bug stays as it is
        _CastBreaks(bug_in_fp32=True).score(items)
    assert e.type is RuntimeError


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.int8, torch.complex64])
def test_dtypes_no_model_computes_in_are_refused_up_front(dtype, tmp_path):
    with pytest.raises(DeviceError, match="dtype must be one of float32, bfloat16, float16 or float64"):
        resolve_dtype(dtype)
    model, items = _rnd()
    model.save_pretrained(str(tmp_path / "m"))
    with pytest.raises(DeviceError, match="dtype must be one of"):
        mmreward.load(str(tmp_path / "m"), dtype=dtype)
    for ok in (torch.float32, torch.bfloat16, torch.float16, torch.float64, "bf16", None):
        resolve_dtype(ok)


def test_blip_image_reward_scores_in_every_cast_and_a_bf16_diffusion_reward_reloads_in_float32(tmp_path):
    """ImageReward (BLIP) runs its head in the head's dtype (it fed float32 into a cast head); a Diffusion
    Reward saved after ``.to(bfloat16)`` reloads all-float32, as episode scorers load, and scores."""
    model, items = _blip()
    base = model.eval().score(items)
    for dtype, tol in ((torch.float64, 1e-4), (torch.bfloat16, 0.2), (torch.float16, 0.02)):
        got = model.to(dtype).score(items)
        torch.testing.assert_close(got, base, rtol=tol, atol=tol)
    dr, episodes = _diffusion_reward()
    dr.to(torch.bfloat16).save_pretrained(str(tmp_path / "dr"))
    loaded = mmreward.load(str(tmp_path / "dr"))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert torch.isfinite(loaded.score(episodes)).all()
