"""Text RM objectives and recipes against their official definitions, with numbers worked out by hand
from the papers / official code (never from the code under test):

* Bradley-Terry ``-log σ(r_c - r_r)``; Llama 2's margin loss ``-log σ(r_c - r_r - m)``; reward centering
  ``+ c·mean((r_c + r_r)²)`` (Eisenstein et al., TRL ``center_rewards_coefficient``); two-class label
  smoothing (target ``1 - ε/2``); RRM ties (target ½) — through the trainer's loss function, plain and
  fused head;
* the score token: the last token of each row, left or right padded (transformers' classifiers read the
  rightmost non-pad token), and decoder rewards that do not depend on the padding side;
* ArmoRM (RLHFlow ``modeling_custom.py``): ``score = Σ_k softmax(MLP(h_gate)/T)_k · logit_scale ·
  (regression(h_last) @ reward_transform_matrix)_k``; ``output.rewards`` (the card's
  ``multi_obj_rewards``) are the regression outputs *before* the matrix;
* RAFT's global ranking keeps 1/K of the samples (LMFlow: ``K = int(1 / top_reward_percentage)``);
* WARM: the weighted mean of the members' weights; RRM: 8 triplets + 6 ties per example, prompt x_i;
  Skywork: ``ceil(fraction · n_c)`` pairs per category by the given score.
"""
import math

import pytest
import torch
from torch import nn

pytest.importorskip("transformers", reason="mmreward.text needs transformers")
from text_rm_fixtures import llama_config  # noqa: E402

from mmreward.core.trainer import Weighted  # noqa: E402
from mmreward.text.train import RewardTrainConfig, pairwise_loss_fn  # noqa: E402


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ------------------------------------------------------------------ the pairwise objectives
class FixedRewards(nn.Module):
    """A 'model' whose rewards are given: row i of the batch gets reward r[i] = h[i]·w + b."""

    def __init__(self, rewards):
        super().__init__()
        self.h = torch.tensor(rewards, dtype=torch.float32).reshape(-1, 1)
        self.head = nn.Linear(1, 1)
        with torch.no_grad():
            self.head.weight.fill_(1.0)
            self.head.bias.fill_(0.0)

    def forward(self, input_ids, attention_mask, token_type_ids=None, return_hidden=False):
        return self.h if return_hidden else self.head(self.h).squeeze(-1)


RC, RR, MARGIN, TIE = [1.0, 0.5, -0.2], [0.0, 1.0, -0.2], [0.5, 1.0, 2.0], [False, True, False]


def batch(with_margin=True, with_tie=False):
    return {"input_ids": torch.ones(6, 2, dtype=torch.long), "attention_mask": torch.ones(6, 2, dtype=torch.long),
            "margin": torch.tensor(MARGIN) if with_margin else None,
            "tie": torch.tensor(TIE) if with_tie else None}


def expected(kind, eps=0.0, c=0.0, tie=False):
    out = []
    for i, (a, b) in enumerate(zip(RC, RR)):
        d = a - b
        if tie and TIE[i]:
            loss = -0.5 * logsig(d) - 0.5 * logsig(-d)  # RRM: target probability 1/2, no margin / smoothing
        else:
            z = d - (MARGIN[i] if kind == "margin" else 0.0)  # Llama 2: -log σ(r_c - r_r - m(r))
            loss = -(1 - eps / 2) * logsig(z) - (eps / 2) * logsig(-z)
        out.append(loss + c * (a + b) ** 2)
    return sum(out) / len(out)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind,eps,c,tie", [("bt", 0.0, 0.0, False), ("margin", 0.0, 0.0, False),
                                            ("bt", 0.2, 0.0, False), ("bt", 0.0, 0.1, False),
                                            ("margin", 0.2, 0.05, True)])
def test_pairwise_objectives_as_defined(fused, kind, eps, c, tie):
    cfg = RewardTrainConfig(output_dir="unused", max_steps=1, loss=kind, label_smoothing=eps, center_coef=c,
                            fused_head=fused)
    loss, metrics = pairwise_loss_fn(cfg)(FixedRewards(RC + RR), batch(with_margin=True, with_tie=tie))
    assert loss.item() == pytest.approx(expected(kind, eps, c, tie), abs=1e-6)
    # accuracy: strict r_c > r_r over the non-tie pairs (pair 2 is an exact tie of rewards: wrong)
    acc = metrics["accuracy"]
    assert isinstance(acc, Weighted)
    assert float(acc) == pytest.approx(0.5 if tie else 1 / 3) and acc.weight == (2 if tie else 3)


def test_bt_ignores_the_margin_and_margin_zero_is_bt():
    bt = pairwise_loss_fn(RewardTrainConfig(output_dir="unused", max_steps=1, loss="bt"))
    assert bt(FixedRewards(RC + RR), batch())[0].item() == pytest.approx(expected("bt"), abs=1e-6)
    m = pairwise_loss_fn(RewardTrainConfig(output_dir="unused", max_steps=1, loss="margin"))
    b = batch()
    b["margin"] = torch.zeros(3)
    assert m(FixedRewards(RC + RR), b)[0].item() == pytest.approx(expected("bt"), abs=1e-6)


def test_centering_gives_the_bias_its_gradient_and_bt_does_not():
    """BT is shift-invariant (zero gradient on a shared bias); centering pulls r_c + r_r to 0:
    d/db c·mean((r_c + r_r)²) = c·mean(4·(r_c + r_r))."""
    for c in (0.0, 0.1):
        model = FixedRewards(RC + RR)
        loss, _ = pairwise_loss_fn(RewardTrainConfig(output_dir="unused", max_steps=1, center_coef=c))(model, batch(False))
        loss.backward()
        want = c * sum(4 * (a + b) for a, b in zip(RC, RR)) / 3
        assert model.head.bias.grad.item() == pytest.approx(want, abs=1e-6)


# ------------------------------------------------------------------ the score token
def test_last_token_of_left_and_right_padded_rows():
    from mmreward.text.reward_model import last_positions

    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_positions(right).tolist() == [2, 4, 0]
    assert last_positions(left).tolist() == [4, 4, 4]
    # transformers' rule on ids whose pad id (0) appears only as padding: the rightmost non-pad token
    ids = torch.tensor([[7, 8, 9, 0, 0], [7, 8, 9, 6, 5], [7, 0, 0, 0, 0]])
    rule = (torch.arange(5) * (ids != 0)).argmax(-1)
    assert last_positions(right).tolist() == rule.tolist()


def test_decoder_rewards_do_not_depend_on_the_padding_side():
    from mmreward.text.reward_model import RewardModel

    torch.manual_seed(0)
    rm = RewardModel.from_backbone(llama_config()).eval()
    rows = [[4, 9, 10, 11, 12], [4, 13, 14]]
    with torch.no_grad():
        alone = torch.stack([rm(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long))[0] for r in rows])
        right = rm(torch.tensor([rows[0], rows[1] + [0, 0]]), torch.tensor([[1] * 5, [1, 1, 1, 0, 0]]))
        left = rm(torch.tensor([rows[0], [0, 0] + rows[1]]), torch.tensor([[1] * 5, [0, 0, 1, 1, 1]]))
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ ArmoRM
@pytest.fixture(scope="module")
def armo():
    from mmreward.text.armo import ArmoRewardModel, ArmoRMConfig

    cfg = llama_config()
    config = ArmoRMConfig(backbone={**cfg.to_dict(), "model_type": "llama"}, input_format="joined", num_objectives=3,
                          gating_hidden_dim=8, gating_n_hidden=2, gating_temperature=10.0, gating_pattern=[7, 8])
    torch.manual_seed(1)
    model = ArmoRewardModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
        model.reward_transform_matrix.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.4, -0.3, 1.0]]))
        model.logit_scale.fill_(1.7)
    return model


def test_armo_score_is_the_official_gated_sum(armo):
    ids = torch.tensor([[4, 9, 7, 8, 10, 7, 8, 11, 12], [0, 0, 0, 4, 7, 8, 13, 14, 15]])  # 2nd row left-padded
    mask = torch.tensor([[1] * 9, [0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        h, _ = armo.token_states(ids, mask)
        # official: gate read at the start of the LAST pattern, rewards at the last token
        h_gate, h_last = torch.stack([h[0, 5], h[1, 4]]), torch.stack([h[0, 8], h[1, 8]])
        raw = h_last @ armo.head.weight.T
        x = h_gate
        for i, layer in enumerate(armo.gating):
            x = x @ layer.weight.T + layer.bias
            x = x.clamp(min=0) if i < len(armo.gating) - 1 else x
        gate = torch.exp(x / 10.0) / torch.exp(x / 10.0).sum(1, keepdim=True) * 1.7
        want = (gate * (raw @ armo.reward_transform_matrix)).sum(1)
        torch.testing.assert_close(armo(ids, mask), want, atol=1e-5, rtol=0)
        got_raw, got_gate = armo.objectives_and_gate(ids, mask, transformed=False)
        torch.testing.assert_close(got_raw, raw, atol=1e-5, rtol=0)
        torch.testing.assert_close(got_gate, gate, atol=1e-6, rtol=0)
        torch.testing.assert_close(armo.objectives_and_gate(ids, mask)[0], raw @ armo.reward_transform_matrix,
                                   atol=1e-5, rtol=0)
    # the matrix takes objective 2 (as ArmoRM's verbosity) out of objectives 0 and 1: they really differ
    assert float((raw @ armo.reward_transform_matrix - raw)[:, :2].abs().min()) > 1e-3


def test_armo_objectives_give_the_cards_raw_rewards_on_request(armo):
    from text_rm_fixtures import word_tokenizer

    armo.tokenizer = word_tokenizer(bos=True)
    pattern = armo.config.gating_pattern
    armo.config.gating_pattern = armo.tokenizer.encode("answer to", add_special_tokens=False)
    pairs = [("what is the answer to two plus three", "five"), ("say the answer to a", "b c d")]
    try:
        transformed = armo.objectives(pairs)
        raw = armo.objectives(pairs, transformed=False)
    finally:
        armo.config.gating_pattern = pattern
    torch.testing.assert_close(raw @ armo.reward_transform_matrix, transformed, atol=1e-5, rtol=0)
    assert not torch.allclose(raw, transformed, atol=1e-3)
    with pytest.raises(TypeError, match="transformed must be True or False"):
        armo.objectives(pairs, transformed="raw")


# ------------------------------------------------------------------ RAFT, WARM, RRM, Skywork
def test_raft_global_ranking_keeps_one_in_k_by_default():
    from mmreward.text.recipes.reward_ranked import RaftConfig, select_samples

    r = torch.tensor([0.1, 0.9, 0.3, 0.5, 0.2, 0.0, 0.8, 0.7])  # 2 prompts × K = 4
    # official: K = int(1 / top_reward_percentage): the top 1/K of the 8 samples, i.e. 2 (as many as prompts)
    assert select_samples(r, 2, RaftConfig(samples_per_prompt=4, selection="top_fraction")) == [1, 6]
    assert select_samples(r[:6], 2, RaftConfig(samples_per_prompt=3, selection="top_fraction")) == [1, 3]
    assert select_samples(r, 2, RaftConfig(samples_per_prompt=4, selection="top_fraction", top_fraction=0.5)) == [1, 3, 6, 7]
    assert select_samples(r, 2, RaftConfig(samples_per_prompt=4)) == [1, 6]  # best of each prompt's K
    with pytest.raises(ValueError, match="top_fraction"):
        RaftConfig(top_fraction=0.0)
    with pytest.raises(ValueError, match="top_fraction"):
        RaftConfig(top_fraction=True)


def test_warm_is_the_weighted_mean_of_the_weights():
    from mmreward.text.recipes.warm import average_state_dicts

    a = {"w": torch.tensor([[1.0, 2.0]]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([[3.0, 6.0]]), "n": torch.tensor([3])}
    assert average_state_dicts([a, b], check_init=False)["w"].tolist() == [[2.0, 4.0]]
    assert average_state_dicts([a, b], [1, 3], check_init=False)["w"].tolist() == [[2.5, 5.0]]
    assert average_state_dicts([a, b], check_init=False)["n"].tolist() == [3]


def test_rrm_rows_per_example():
    from mmreward.text.recipes.rrm import RRMConfig, rrm_augment

    pairs = [{"prompt": f"p{i}", "chosen": f"w{i}", "rejected": f"l{i}"} for i in range(3)]
    rows = rrm_augment(pairs, RRMConfig(seed=0))
    assert len(rows) == 3 * 15
    mine = rows[:15]
    assert mine[0] == {"prompt": "p0", "chosen": "w0", "rejected": "l0", "tie": False, "rrm": "original"}
    trip, ties = [r for r in mine if r["rrm"] == "triplet"], [r for r in mine if r["rrm"] == "tie"]
    foreign = {"w1", "l1", "w2", "l2"}  # the two other examples (the only ones with another prompt)
    assert len(trip) == 8 and {(r["chosen"], r["rejected"]) for r in trip} == {(o, f) for o in ("w0", "l0") for f in foreign}
    assert len(ties) == 6 and {frozenset((r["chosen"], r["rejected"])) for r in ties} == {
        frozenset((x, y)) for x in foreign for y in foreign if x < y}
    assert all(r["prompt"] == "p0" for r in mine) and all(r["tie"] for r in ties)


def test_skywork_keeps_ceil_fraction_per_category():
    from mmreward.text.recipes.skywork import select_top_by_margin

    pairs = [{"prompt": "p", "chosen": "c", "rejected": "r", "category": k, "id": i}
             for i, k in enumerate("aaabbc")]
    scores = torch.tensor([0.1, 0.9, 0.5, -1.0, 2.0, 0.0])
    kept = select_top_by_margin(pairs, scores, 0.5)
    assert [p["id"] for p in kept] == [1, 2, 4, 5]  # a: ceil(1.5) = 2 → ids 1, 2; b: 1 → id 4; c: 1 → id 5


def test_armo_gate_of_a_left_padded_row_is_found_after_the_padding(armo):
    ids = torch.tensor([[0, 0, 7, 8, 9, 7, 8, 10]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    assert armo.gating_positions(ids, mask).tolist() == [5]  # the last pattern, counted in the padded row


def test_weights_and_fractions_given_as_strings_are_refused():
    from mmreward.text.recipes.skywork import select_top_by_margin
    from mmreward.text.recipes.warm import average_state_dicts

    a, b = {"w": torch.tensor([[1.0, 2.0]])}, {"w": torch.tensor([[3.0, 6.0]])}
    with pytest.raises(TypeError, match="weights must be a list of numbers"):
        average_state_dicts([a, b], "13", check_init=False)  # used to average with weights 1/4, 3/4
    assert average_state_dicts([a, b], torch.tensor([1.0, 3.0]), check_init=False)["w"].tolist() == [[2.5, 5.0]]
    pairs = [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2
    with pytest.raises(ValueError, match="fraction must be a number in"):
        select_top_by_margin(pairs, torch.zeros(2), "0.5")


@pytest.mark.parametrize("field", ["center_coef", "label_smoothing"])
def test_objective_coefficients_given_as_booleans_are_refused(field):
    # center_coef=True used to train with c = 1 (100x the usual 0.01) without a word
    with pytest.raises(ValueError, match=f"RewardTrainConfig.{field}"):
        RewardTrainConfig(output_dir="unused", max_steps=1, **{field: True})
