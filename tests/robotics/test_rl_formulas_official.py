"""The visual-RL formulas against their official definitions, with numbers worked out by hand:
DrQ-v2 (facebookresearch/drqv2: schedules, random shifts, twin-Q target and losses, target EMA,
n-step replay), SAC (squashed-Gaussian log-probability, target entropy −|A|), the Diffusion Reward
mixing (TEA-Lab/diffusion_reward: (1 − α)·z(r) stored with the episode, α·RND of the sampled next
observations added per batch), RND (½‖f_target − f_pred‖², running statistics) and potential-based
shaping (Ng et al. 1999)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmreward.robotics.rl.drqv2 import DrQV2Agent, DrQV2Config, random_shift, schedule
from mmreward.robotics.rl.replay import EpisodeRecord, ReplayBuffer
from mmreward.robotics.rl.sac import GaussianActor, SACAgent, SACConfig


# ----------------------------------------------------------------------------- DrQ-v2
def test_schedules_are_drqv2s_including_step_linear():
    """Before: 'step_linear(...)', one of DrQ-v2's two schedule forms, was refused as unknown."""
    assert schedule("linear(1.0,0.1,100)", 25) == pytest.approx(0.775)  # 0.75·1 + 0.25·0.1
    assert schedule("linear(1.0,0.1,100)", 400) == pytest.approx(0.1)
    spec = "step_linear(1.0,0.5,10,0.1,20)"  # 1 → 0.5 over 10 steps, then 0.5 → 0.1 over 20
    assert schedule(spec, 0) == pytest.approx(1.0)
    assert schedule(spec, 4) == pytest.approx(0.8)  # 0.6·1 + 0.4·0.5
    assert schedule(spec, 10) == pytest.approx(0.5)  # step <= duration1 stays on the first segment
    assert schedule(spec, 15) == pytest.approx(0.4)  # 0.75·0.5 + 0.25·0.1
    assert schedule(spec, 1000) == pytest.approx(0.1)
    DrQV2Config(stddev_schedule=spec).validate()
    with pytest.raises(ValueError, match="stddev_schedule must give finite stds >= 0"):
        DrQV2Config(stddev_schedule="step_linear(1.0,-0.5,10,0.1,20)").validate()
    with pytest.raises(ValueError, match="unknown schedule.*step_linear"):
        schedule("step_linear(1.0,0.5,10)", 0)


def _official_shift(x: torch.Tensor, pad: int, shift_xy: torch.Tensor) -> torch.Tensor:
    """DrQ-v2's RandomShiftsAug with the given integer shifts ``[n, 2]`` (x = columns, y = rows)."""
    n, _, h, w = x.shape
    x = F.pad(x, (pad,) * 4, mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad)[:h]
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
    grid = base + shift_xy.float().view(n, 1, 1, 2) * 2.0 / (h + 2 * pad)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def test_random_shift_equals_drqv2s_bilinear_grid_sample():
    x = torch.rand(6, 3, 12, 12) * 255
    out = random_shift(x, 4, torch.Generator().manual_seed(3))
    off = torch.randint(0, 9, (6, 2), generator=torch.Generator().manual_seed(3))  # rows, cols as drawn
    ref = _official_shift(x, 4, off.flip(1))  # official grids are (x, y)
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=0)
    # a hand case: pad 1, a 2×2 image shifted by (row 0, col 2): the last padded columns
    img = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    padded = F.pad(img, (1, 1, 1, 1), mode="replicate")[0, 0]
    assert padded[0:2, 2:4].tolist() == [[2.0, 2.0], [2.0, 2.0]]
    torch.testing.assert_close(_official_shift(img, 1, torch.tensor([[2, 0]]))[0, 0], padded[0:2, 2:4])


class _FixedQ(nn.Module):
    """A critic whose two heads output fixed per-sample values (learnable scalars for the online one)."""

    def __init__(self, q1, q2, learn=False):
        super().__init__()
        make = nn.Parameter if learn else (lambda t: nn.Parameter(t, requires_grad=False))
        self.q1, self.q2 = make(torch.tensor(q1)[:, None]), make(torch.tensor(q2)[:, None])

    def forward(self, h, action):
        return self.q1 + 0 * action.sum(-1, keepdim=True), self.q2 + 0 * action.sum(-1, keepdim=True)


def test_drqv2_critic_target_losses_and_actor_loss_by_hand():
    """target = r + γ^n·min(Q1', Q2'); loss = MSE(Q1, target) + MSE(Q2, target); actor: −min(Q1, Q2)."""
    torch.manual_seed(0)
    agent = DrQV2Agent((3, 16, 16), 2, DrQV2Config(hidden_dim=8, feature_dim=4, stddev_schedule="0.0",
                                                    augment_pad=0))
    agent.critic_target = _FixedQ([1.0, 5.0], [3.0, 2.0])
    agent.critic = _FixedQ([0.0, 1.0], [2.0, -1.0], learn=True)
    agent.critic_opt = torch.optim.SGD(agent.critic.parameters(), lr=0.0)
    batch = {"obs": torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "next_obs": torch.zeros(2, 3, 16, 16, dtype=torch.uint8),
             "action": torch.zeros(2, 2), "reward": torch.tensor([0.5, -1.0]),
             "discount": torch.full((2,), 0.9 ** 3)}
    m = agent.update(batch, step=0)
    # targets: 0.5 + 0.729·min(1, 3) = 1.229 and −1 + 0.729·min(5, 2) = 0.458
    assert m["critic_target_q"] == pytest.approx((1.229 + 0.458) / 2, abs=1e-6)
    # MSE(Q1) = ((0 − 1.229)² + (1 − 0.458)²)/2, MSE(Q2) = ((2 − 1.229)² + (−1 − 0.458)²)/2
    want = ((1.229 ** 2 + 0.542 ** 2) + (0.771 ** 2 + 1.458 ** 2)) / 2
    assert m["critic_loss"] == pytest.approx(want, abs=1e-5)
    assert m["actor_loss"] == pytest.approx(-(0.0 + -1.0) / 2)  # −mean(min(0, 2), min(1, −1))


def test_drqv2_target_critic_moves_by_tau():
    torch.manual_seed(0)
    agent = DrQV2Agent((3, 16, 16), 2, DrQV2Config(hidden_dim=8, feature_dim=4, critic_target_tau=0.25))
    before = [p.clone() for p in agent.critic_target.parameters()]
    batch = {"obs": torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8),
             "next_obs": torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8),
             "action": torch.rand(4, 2) * 2 - 1, "reward": torch.randn(4), "discount": torch.full((4,), 0.97)}
    agent.update(batch, step=10)
    for b, c, t in zip(before, agent.critic.parameters(), agent.critic_target.parameters()):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * c)  # τ·θ + (1 − τ)·θ'


def _episode(rewards, size=16):
    t = len(rewards)
    frames = np.stack([np.full((size, size, 3), i, np.uint8) for i in range(t + 1)])  # frame i shows i
    return EpisodeRecord(frames=frames, actions=np.arange(t, dtype=np.float32)[:, None],
                         rewards=np.asarray(rewards, np.float32), env_rewards=np.zeros(t, np.float32),
                         success=np.zeros(t, bool))


def test_replay_n_step_return_and_episode_end_by_hand():
    """n = 3, γ = 0.5 on rewards 1..5: t ∈ {0, 1, 2} only (the last n − 1 starts have no n-step
    successor), reward Σ γ^i r_{t+i}, discount γ³, next observation frame t + 3."""
    buf = ReplayBuffer(100, nstep=3, discount=0.5, seed=0)
    buf.add(_episode([1, 2, 3, 4, 5]))
    want = {0: 1 + 0.5 * 2 + 0.25 * 3, 1: 2 + 0.5 * 3 + 0.25 * 4, 2: 3 + 0.5 * 4 + 0.25 * 5}  # 2.75, 4.5, 6.25
    b = buf.sample(300)
    t = b["obs"][:, 0, 0, 0].long()
    assert set(t.tolist()) == {0, 1, 2}
    torch.testing.assert_close(b["reward"], torch.tensor([want[i] for i in t.tolist()]))
    torch.testing.assert_close(b["next_obs"][:, 0, 0, 0].long(), t + 3)
    torch.testing.assert_close(b["action"][:, 0], t.float())
    assert torch.all(b["discount"] == 0.125)


# ----------------------------------------------------------------------------- SAC
def test_sac_squashed_gaussian_log_prob_by_hand():
    actor = GaussianActor(1, 1, 4)
    actor.forward = lambda obs: (torch.full((len(obs), 1), 0.5), torch.full((len(obs), 1), math.log(0.2)))
    a, logp = actor.sample(torch.zeros(3, 1), torch.Generator().manual_seed(7))
    eps = torch.randn((3, 1), generator=torch.Generator().manual_seed(7))[:, 0].tolist()
    for i, e in enumerate(eps):
        u = 0.5 + 0.2 * e
        want = -0.5 * e * e - math.log(0.2) - 0.5 * math.log(2 * math.pi) - math.log(1 - math.tanh(u) ** 2)
        assert float(a[i, 0]) == pytest.approx(math.tanh(u), abs=1e-6)
        assert float(logp[i]) == pytest.approx(want, abs=1e-5)


def test_sac_soft_target_and_temperature_loss_by_hand():
    agent = SACAgent(2, 3, SACConfig(hidden_dim=4, init_temperature=0.5))
    assert agent.target_entropy == -3.0  # −|A|
    fixed = -1.25  # log π of every sampled action
    tie = next(agent.actor.parameters()).sum() * 0  # keeps the actor loss differentiable

    agent.actor.sample = lambda obs, g: (torch.zeros(len(obs), 3) + tie, torch.full((len(obs),), fixed) + tie)
    agent.critic_target.forward = lambda obs, act: (torch.tensor([1.0, 4.0]), torch.tensor([2.0, 3.0]))
    batch = {"obs": torch.zeros(2, 2), "next_obs": torch.zeros(2, 2), "action": torch.zeros(2, 3),
             "reward": torch.tensor([1.0, 0.0]), "discount": torch.tensor([0.9, 0.0])}
    m = agent.update(batch)
    # r + γ·(min Q' − α·log π): 1 + 0.9·(1 + 0.625) = 2.4625; terminal: 0
    assert m["critic_target_q"] == pytest.approx((2.4625 + 0.0) / 2)
    # α loss = −log α·(log π + target entropy) = −ln 0.5·(−1.25 − 3)
    assert m["alpha_loss"] == pytest.approx(-math.log(0.5) * (fixed - 3.0))
    assert m["alpha"] < 0.5  # entropy 1.25 above the target −3: the temperature goes down


# ----------------------------------------------------------------------------- RND
def _rnd(**kw):
    from mmreward.robotics.reward import RND, RNDConfig

    torch.manual_seed(0)
    return RND(RNDConfig(image_size=32, channels=(4, 8, 8), feature_dim=4, hidden_dim=8, **kw))


def test_rnd_novelty_and_running_std_by_hand():
    rnd = _rnd()
    with torch.no_grad():  # predictor ≡ 0, target ≡ b: novelty ½‖b‖² = ½(1 + 4 + 0 + 4) = 4.5 for every frame
        rnd.predictor[-1].weight.zero_()
        rnd.predictor[-1].bias.zero_()
        rnd.target[-1].weight.zero_()
        rnd.target[-1].bias.copy_(torch.tensor([1.0, 2.0, 0.0, -2.0]))
    frames = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(rnd.raw_novelty(frames), torch.full((3,), 4.5))
    torch.testing.assert_close(rnd(frames), torch.full((3,), 4.5))  # no statistics yet: std 1
    rnd._update_stats(torch.tensor([1.0, 2.0, 3.0]))
    rnd._update_stats(torch.tensor([4.0, 5.0]))  # all five: mean 3, Σ(x − 3)² = 10, std √(10/5)
    assert rnd.stat.tolist() == pytest.approx([5.0, 3.0, 10.0])
    assert rnd.running_std == pytest.approx(math.sqrt(2.0))
    torch.testing.assert_close(rnd(frames), torch.full((3,), 4.5 / (math.sqrt(2.0) + 1e-8)))


def _tiny_reward(rnd=True, **cfg):
    from mmreward.robotics.codec import VQGAN, VQGANConfig
    from mmreward.robotics.reward import DiffusionReward, DiffusionRewardConfig
    from mmreward.robotics.video import ConditionalVQDiffusion, VQDiffusionConfig

    torch.manual_seed(0)
    codec = VQGAN(VQGANConfig(image_size=32, channels=(8, 8, 8, 8), latent_dim=8, num_codes=16))
    video = ConditionalVQDiffusion(VQDiffusionConfig(num_codes=16, token_shape=(4, 4), num_steps=20, dim=32, depth=1,
                                                     heads=2, context_dim=32))
    dr = DiffusionReward(codec, video, DiffusionRewardConfig(skip_step=4, **cfg), _rnd() if rnd else None)
    dr.statistics.copy_(torch.tensor([-150.0, 5.0, 10.0], dtype=torch.float64))
    if dr.rnd is not None:
        dr.rnd.stat.copy_(torch.tensor([4.0, 0.0, 16.0], dtype=torch.float64))  # running std √(16/4) = 2
    return dr


def test_diffusion_reward_mixing_by_hand():
    """Official calc_reward: (1 − α)·(r − mean)/std; the agent adds α·RND(next obs); + success."""
    dr = _tiny_reward(expl_scale=0.95)
    frames = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    raw = torch.tensor([-145.0, -160.0])  # z = [1, −2]
    n = dr.rnd.raw_novelty(frames) / 2.0  # over the running std 2
    s = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(dr.combine(raw, frames, s), 0.05 * torch.tensor([1.0, -2.0]) + 0.95 * n + s)
    torch.testing.assert_close(dr.combine(raw, frames, s, with_rnd=False), torch.tensor([0.05, 0.9]))
    torch.testing.assert_close(dr.exploration_bonus(frames), 0.95 * n)
    plain = _tiny_reward(rnd=False)
    torch.testing.assert_close(plain.combine(raw, frames, s), torch.tensor([1.0, -1.0]))  # z + success
    torch.testing.assert_close(plain.exploration_bonus(frames), torch.zeros(2))
    clipped = _tiny_reward(rnd=False, clip_min=-1.5)
    torch.testing.assert_close(clipped.combine(raw, frames), torch.tensor([1.0, -1.5]))


def test_learned_source_stores_no_rnd_and_pays_it_per_batch():
    """Before: the RND term was computed once, when the episode ended, and stored in the replay buffer
    with it, so a transition kept its first novelty however often the predictor had seen the frame
    since. The official agent adds α·RND(next obs) of the current predictor to every sampled batch."""
    from mmreward.robotics.rl.rewards import LearnedReward
    from mmreward.robotics.wrappers import relabel_episode

    dr = _tiny_reward(expl_scale=0.95)
    src = LearnedReward(dr, "diffusion")
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    succ = np.array([False, False, True])
    stored = src(frames, np.zeros(3, np.float32), succ)
    z = dr(torch.from_numpy(frames), with_rnd=False)  # (1 − α)·z of each frame, no success given
    np.testing.assert_allclose(stored, (z[1:] + torch.tensor([0.0, 0.0, 1.0])).numpy(), rtol=1e-5, atol=1e-5)
    full = relabel_episode(dr, frames, succ)  # the reward model's own scoring keeps the RND term
    novelty = dr.rnd(torch.from_numpy(frames[1:])).numpy()
    np.testing.assert_allclose(full - stored, 0.95 * novelty, rtol=1e-4, atol=1e-5)
    nxt = torch.from_numpy(frames[1:])
    before = src.bonus(nxt)
    torch.testing.assert_close(before, 0.95 * dr.rnd(nxt))
    src.update(nxt)  # the predictor learns these frames ...
    src.update(nxt)
    torch.testing.assert_close(src.bonus(nxt), 0.95 * dr.rnd(nxt))  # ... and the bonus follows it
    assert not torch.allclose(src.bonus(nxt), before)
    dr.config.expl_scale = 0.0
    assert src.bonus(nxt) is None  # α = 0: no RND term at all


def test_rnd_source_relabels_success_only_and_pays_novelty_per_batch():
    from mmreward.robotics.rl.rewards import _RNDOnly

    dr = _tiny_reward(expl_scale=1.0, use_std=False)
    src = _RNDOnly(dr, "rnd", 10)
    frames = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(src(frames, np.zeros(2, np.float32), np.array([False, True])), [0.0, 1.0])
    torch.testing.assert_close(src.bonus(torch.from_numpy(frames)), dr.rnd(torch.from_numpy(frames)))


def test_workspace_adds_the_bonus_of_the_sampled_next_observations():
    from mmreward.robotics.rl.workspace import Workspace, next_frames

    buf = ReplayBuffer(100, nstep=2, discount=0.5, seed=0, frame_stack=2)
    buf.add(_episode([1, 2, 3, 4]))
    seen = {}

    class Agent:
        def update(self, batch, step):
            seen.update(batch)
            return {}

    class Source:
        update_interval = 0

        def bonus(self, frames):  # 10 × the frame's value: which frame is visible in the sum
            assert frames.shape[1:] == (16, 16, 3) and frames.dtype == torch.uint8
            return 10.0 * frames[:, 0, 0, 0].float()

    ws = SimpleNamespace(cfg=SimpleNamespace(num_seed_frames=0, update_every_steps=1, batch_size=64),
                         global_step=0, global_frame=0, replay=buf, agent=Agent(), reward=Source(),
                         _last_metrics={})
    Workspace._train_step_hook(ws)
    t = seen["obs"][:, -3, 0, 0].long()  # the newest frame of the stack
    nstep = {0: 1 + 0.5 * 2, 1: 2 + 0.5 * 3, 2: 3 + 0.5 * 4}
    want = torch.tensor([nstep[i] + 10.0 * (i + 2) for i in t.tolist()])  # + 10 × frame t + n
    torch.testing.assert_close(seen["reward"], want)
    assert torch.equal(next_frames(seen["next_obs"])[:, 0, 0, 0].long(), t + 2)
    assert "rnd_bonus" in ws._last_metrics


# ----------------------------------------------------------------------------- potential-based shaping
class _Phi(nn.Module):
    """A reward model whose reward of a frame is the frame's value (Φ)."""

    rnd = None

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(use_sparse=True, success_scale=1.0, expl_scale=0.0)
        self.device = torch.device("cpu")

    def forward(self, frames, success=None, *, with_rnd=True):
        return frames[:, 0, 0, 0].float()


def test_potential_shaping_by_hand_and_its_n_step_telescoping():
    """F = γ·Φ(s') − Φ(s) per transition (+ success); n-step sums telescope to γ^n·Φ(s_{t+n}) − Φ(s_t)."""
    from mmreward.robotics.rl.rewards import LearnedReward

    src = LearnedReward(_Phi(), "x", shaping="potential", discount=0.5)
    phi = [2, 0, 4, 1]
    frames = np.stack([np.full((16, 16, 3), v, np.uint8) for v in phi])
    r = src(frames, np.zeros(3, np.float32), np.array([False, False, True]))
    np.testing.assert_allclose(r, [0.5 * 0 - 2, 0.5 * 4 - 0, 0.5 * 1 - 4 + 1])  # −2, 2, −2.5
    ep = _episode(list(r))
    ep.frames = frames
    buf = ReplayBuffer(100, nstep=3, discount=0.5, seed=0)
    buf.add(ep)
    b = buf.sample(4)
    # the only start: 0.125·Φ(s3) − Φ(s0) + 0.25·success = 0.125 − 2 + 0.25
    torch.testing.assert_close(b["reward"], torch.full((4,), -1.625))


def test_defaults_and_sizes_are_the_official_configs():
    """drqv2 / diffusion_reward configs: lr 1e-4, feature 50, hidden 1024, τ 0.01, 2000 exploration steps,
    std clip 0.3, γ 0.99, frame stack 1, action repeat 2, n 3, batch 256, update every 2 steps, 4000 seed
    frames, 1M replay; encoder 4 convs of 32 (32·35·35 features at 84 px); RND 32-64-64 convs, 7·7·64 → 512."""
    from mmreward.robotics.reward import RND, RNDConfig
    from mmreward.robotics.rl.workspace import RLConfig

    c, r = DrQV2Config(), RLConfig()
    assert (c.lr, c.feature_dim, c.hidden_dim, c.critic_target_tau, c.num_expl_steps, c.stddev_clip, c.discount,
            c.augment_pad) == (1e-4, 50, 1024, 0.01, 2000, 0.3, 0.99, 4)
    assert (r.frame_stack, r.action_repeat, r.nstep, r.batch_size, r.update_every_steps, r.num_seed_frames,
            r.replay_buffer_size) == (1, 2, 3, 256, 2, 4000, 1_000_000)
    from mmreward.robotics.rl.drqv2 import Encoder

    assert Encoder((9, 84, 84)).repr_dim == 32 * 35 * 35
    agent = DrQV2Agent((3, 16, 16), 6, DrQV2Config(hidden_dim=16))
    assert [m.out_channels for m in agent.encoder.convnet if isinstance(m, nn.Conv2d)] == [32] * 4
    assert [m.stride for m in agent.encoder.convnet if isinstance(m, nn.Conv2d)] == [(2, 2)] + [(1, 1)] * 3
    assert [m.out_features for m in agent.critic.q1 if isinstance(m, nn.Linear)] == [16, 16, 1]
    assert agent.critic.q1[0].in_features == 50 + 6  # trunk features + action
    rnd = RND(RNDConfig.paper(image_size=64))
    lin = [m for m in rnd.predictor if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(7 * 7 * 64, 512), (512, 512), (512, 512)]
    assert [(m.in_features, m.out_features) for m in rnd.target if isinstance(m, nn.Linear)] == [(7 * 7 * 64, 512)]
    assert rnd.config.lr == 1e-4
