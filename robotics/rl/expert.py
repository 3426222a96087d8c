"""State-based experts trained with SAC (:mod:`.sac`) on an Adroit task's dense reward: the
``--policy expert`` of ``mmreward robotics collect`` for Adroit.

    from mmreward.robotics.rl.expert import ExpertConfig, train_expert
    summary = train_expert(ExpertConfig(task="adroit-door", out="runs/expert-door", steps=1_000_000))
    # runs/expert-door/model: the best-evaluated policy (StatePolicy.from_pretrained)

The environment is :class:`~mmreward.robotics.envs.adroit.AdroitStateEnv` (state observations, no
renderer). Training episodes are seeded from the run's seed and their index; evaluation runs the
deterministic actor on ``eval_episodes`` episodes with seeds of their own (the same episodes every
time), an episode succeeding if any of its steps does, as in the pixel workspace. Steps are agent
steps (each ``action_repeat`` environment steps); the logs also give environment frames.

Outputs in ``out``: ``train.csv`` (+ ``tb/``) per training episode, ``eval/eval.csv`` (+ ``eval/tb/``)
per evaluation, ``curves.png``, ``model/`` (the policy of the best evaluation so far, by success
rate then return), ``final_model/`` (the policy at the end), ``checkpoint-<step>/`` snapshots (the
newest two: agent, optimisers, generator, the replay buffer's arrays, RNG states, counters) taken at
episode boundaries, and ``train_config.json``. Starting follows
:func:`mmreward.core.checkpoint.start_run`: a folder holding a run of the same settings continues from
its newest snapshot, bit-identical to an uninterrupted run; another run's folder is refused;
``overwrite`` starts again.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np
import torch

from mmreward.core.checkpoint import fingerprint_text, remove_leftovers, start_run, unlock_run_folder, write_run_config
from mmreward.core.device import resolve_device
from mmreward.core.logging import MetricLogger
from mmreward.core.train import rng_state, seed_everything, set_rng_state

from .policy import StatePolicy, StatePolicyConfig, policy_folder
from .recording import plot_learning_curves
from .sac import SACAgent, SACConfig

# what a run leaves in its folder besides its snapshots and train_config.json
RUN_FILES = ("train.csv", "tb", "eval", "curves.png", "model", "final_model")


def _help(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@dataclass
class ExpertConfig:
    """A state-based expert training run (SAC on an Adroit task's dense reward)."""

    task: str = _help("Adroit task: adroit-door, adroit-hammer, adroit-pen, adroit-relocate (or adroit/door, "
                      "AdroitHandDoor-v1)", default="adroit-door")
    out: Optional[str] = _help("output folder (logs, snapshots, curves, model/; default: runs/expert-<door|pen|…>)",
                               default=None)
    steps: int = _help("agent steps to train for (a resumed run continues up to this many)", default=1_000_000)
    seed: int = _help("seed of the agent, replay sampling and episode variants", default=1)
    device: str = _help("torch device", default="cpu")
    action_repeat: int = _help("environment steps per agent action (collect's --action-repeat must match)",
                               default=2)
    episode_steps: Optional[int] = _help("agent steps per episode (default: the task's time limit / "
                                         "action_repeat)", default=None)
    eval_every: int = _help("agent steps between evaluations", default=10_000)
    eval_episodes: int = _help("episodes per evaluation (deterministic actor)", default=50)
    snapshot_every: int = _help("agent steps between snapshots (0: only at the end)", default=50_000)
    replay_size: int = _help("transitions kept in the replay buffer", default=1_000_000)
    reward: str = _help("'dense': the environment's dense reward; 'dapg': the same with DAPG's sign of the "
                        "palm-to-object term (gymnasium-robotics <= 1.4.2 pays +0.1·distance on door, hammer, "
                        "relocate)", default="dense")
    reward_scale: float = _help("factor on the environment reward the agent learns from (logs show the raw "
                                "reward)", default=1.0)
    resume: bool = _help("continue the run in --out from its newest snapshot (without: a folder holding a run is "
                         "refused)", default=True)
    overwrite: bool = _help("start again in an --out that holds a run: its snapshots, logs and models are "
                            "removed first", default=False)
    tensorboard: bool = _help("also log to TensorBoard", default=True)
    quiet: bool = _help("no console line per episode and evaluation", default=False)

    def validate(self) -> None:
        if self.out is not None and (not isinstance(self.out, (str, os.PathLike)) or not os.fspath(self.out).strip()):
            # "" was the current folder, whose model/, final_model/, eval/ … overwrite=True removed
            raise ValueError(f"out must name the run's output folder (or None: runs/expert-<task>), got {self.out!r}")
        for name in ("steps", "action_repeat", "eval_every", "eval_episodes", "replay_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be >= 0, got {self.snapshot_every}")
        if self.episode_steps is not None and self.episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {self.episode_steps}")
        from ..envs.adroit import STATE_REWARDS

        if self.reward not in STATE_REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose from {', '.join(STATE_REWARDS)}")
        if not np.isfinite(self.reward_scale) or self.reward_scale <= 0:
            raise ValueError(f"reward_scale must be a finite value > 0, got {self.reward_scale}")


def expert_task(task: str) -> str:
    """The Adroit task id of ``task`` (``adroit/door``, ``AdroitHandDoor-v1`` → ``adroit-door``);
    Meta-World tasks are refused: they have scripted experts."""
    from ..envs import suite_of
    from .workspace import parse_task

    resolved = parse_task(task)
    if suite_of(resolved) != "adroit":
        raise ValueError(f"train-expert trains Adroit experts (adroit-door, adroit-hammer, adroit-pen, "
                         f"adroit-relocate); {resolved} is a Meta-World task, whose scripted expert ships "
                         "(collect --policy expert)")
    return resolved


class StateReplay:
    """Transitions ``(obs, action, reward, next_obs, terminal)`` as float arrays in a ring of
    ``capacity``; the arrays grow by doubling up to it. :meth:`state` is the filled part as arrays
    (plus the write position and the sampling RNG), so a snapshot carries the whole buffer."""

    FIELDS = ("obs", "action", "reward", "next_obs", "terminal")

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, seed: int):
        self.capacity, self.obs_dim, self.action_dim = int(capacity), int(obs_dim), int(action_dim)
        self.size = self.pos = 0
        self.rng = np.random.default_rng(seed)
        self._alloc(min(self.capacity, 1024))

    def _alloc(self, n: int) -> None:
        shapes = {"obs": (self.obs_dim,), "action": (self.action_dim,), "reward": (), "next_obs": (self.obs_dim,),
                  "terminal": ()}
        old = {k: getattr(self, k, None) for k in self.FIELDS}
        for k in self.FIELDS:
            arr = np.zeros((n, *shapes[k]), bool if k == "terminal" else np.float32)
            if old[k] is not None:
                arr[:self.size] = old[k][:self.size]
            setattr(self, k, arr)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminal: bool) -> None:
        if self.pos == len(self.obs) < self.capacity:
            self._alloc(min(2 * len(self.obs), self.capacity))
        for k, v in zip(self.FIELDS, (obs, action, reward, next_obs, terminal)):
            getattr(self, k)[self.pos] = v
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, discount: float) -> dict[str, torch.Tensor]:
        """``batch_size`` transitions drawn uniformly with replacement; ``discount`` is γ, or 0
        after a terminal step."""
        idx = self.rng.integers(0, self.size, batch_size)
        return {"obs": torch.from_numpy(self.obs[idx]), "action": torch.from_numpy(self.action[idx]),
                "reward": torch.from_numpy(self.reward[idx]), "next_obs": torch.from_numpy(self.next_obs[idx]),
                "discount": torch.from_numpy(np.where(self.terminal[idx], 0.0, discount).astype(np.float32))}

    def state(self) -> dict[str, Any]:
        return {"pos": self.pos, "rng": self.rng.bit_generator.state,
                **{k: getattr(self, k)[:self.size].copy() for k in self.FIELDS}}

    def load(self, state: dict[str, Any]) -> None:
        n = len(state["obs"])
        if n > self.capacity or state["obs"].shape[1:] != (self.obs_dim,):
            raise ValueError(f"replay state of {n} × {list(state['obs'].shape[1:])} does not fit a buffer of "
                             f"{self.capacity} × [{self.obs_dim}]")
        self.size = 0
        self._alloc(max(n, min(self.capacity, 1024)))
        for k in self.FIELDS:
            getattr(self, k)[:n] = state[k]
        self.size, self.pos = n, int(state["pos"])
        self.rng.bit_generator.state = state["rng"]


def episode_seed(seed: int, index: int, eval_mode: bool) -> int:
    """Reset seed of training / evaluation episode ``index`` (disjoint ranges for the two)."""
    return (1_000_003 * seed + index + (500_000_000 if eval_mode else 0)) % (2 ** 31 - 1)


class ExpertTrainer:
    """Environments, SAC agent, replay buffer, logs and snapshots of one run (see the module
    docstring). ``make_env`` (tests) replaces the Adroit environment: a callable returning an env
    with ``task``, ``obs_dim``, ``action_dim``, ``max_steps``, ``reset(seed) -> obs``,
    ``step(action) -> StateStep`` and ``close()``."""

    def __init__(self, config: ExpertConfig, agent_config: Optional[SACConfig] = None,
                 make_env: Optional[Callable[[], Any]] = None):
        config.validate()
        if isinstance(config.out, os.PathLike):  # a pathlib.Path failed at the first snapshot, after training
            config = replace(config, out=os.fspath(config.out))
        device = resolve_device(config.device)  # a device this torch cannot use fails before any env starts
        self.cfg, self.agent_cfg = config, agent_config or SACConfig()
        self.agent_cfg.validate()
        if make_env is None:
            from ..envs.adroit import AdroitStateEnv

            task = expert_task(config.task)

            def make_env():
                return AdroitStateEnv(task, action_repeat=config.action_repeat, max_steps=config.episode_steps,
                                      reward=config.reward)

        seed_everything(config.seed)
        self.train_env = make_env()
        self.eval_env = None
        try:
            self.eval_env = make_env()
            self.task = self.train_env.task
            limit = self.train_env.max_steps
            if config.episode_steps is not None and config.episode_steps > limit:
                # the environment caps episodes at the task's time limit: 300 ran 100-step episodes while
                # train_config.json and the fingerprint said 300
                raise ValueError(f"episode_steps ({config.episode_steps}) is longer than {self.task} allows: {limit} "
                                 f"agent steps at action_repeat {config.action_repeat}; use --episode-steps <= {limit} (a run "
                                 "that recorded a longer value ran the task's limit: start it again with --overwrite)")
            if config.out is None:
                default_out = os.path.join("runs", "expert-" + self.task.removeprefix("adroit-"))
                config = self.cfg = replace(config, out=default_out)
            from .workspace import check_run_folder

            check_run_folder(config.out, "train-expert")  # a train-rl run, an episode folder or a model: not its own
            env = self.train_env
            self.agent = SACAgent(env.obs_dim, env.action_dim, self.agent_cfg, seed=config.seed).to(device)
            self.replay = StateReplay(config.replay_size, env.obs_dim, env.action_dim, seed=config.seed)
            self.global_step = self.global_episode = 0
            self.last_eval_step: Optional[int] = None
            self.last_snapshot_step = 0
            self.best: Optional[list[float]] = None  # (success rate, return) of the best evaluation
            self.train_time = 0.0
            self._last_metrics: dict[str, float] = {}  # the last update's, logged with each episode
            self.snapshots, state = start_run(config.out, self._fingerprint(), resume=config.resume,
                                              overwrite=config.overwrite, run_files=RUN_FILES)
            if state is not None:
                self._restore(state)
                if self.global_step - self.train_env.max_steps >= config.steps:
                    # past this target by a whole episode: it returned as is and re-saved final_model/
                    raise ValueError(f"out {config.out!r} holds a run already at step {self.global_step}, past steps "
                                     f"{config.steps}: pass --steps >= {self.global_step - self.train_env.max_steps + 1} "
                                     f"to continue it, or --overwrite to start again")
        except BaseException:
            self.close()
            raise
        write_run_config(config.out, self._fingerprint(), {"config": asdict(config), "agent": asdict(self.agent_cfg),
                                                           "resumed_at_step": self.global_step})
        remove_leftovers(os.path.join(config.out, "eval"))
        # rows after the snapshot are cut (all rows, the step-0 evaluation included, without one)
        log_kw = dict(tensorboard=config.tensorboard, resume_step=self.global_step if state is not None else -1,
                      quiet=True)
        self.train_log = MetricLogger(config.out, filename="train.csv", **log_kw)
        self.eval_log = MetricLogger(os.path.join(config.out, "eval"), filename="eval.csv", **log_kw)

    # ------------------------------------------------------------------ episodes
    def _run_episode(self, env, seed: int, eval_mode: bool) -> tuple[float, bool, int]:
        """One episode; returns (environment return, success at any step, steps). Training episodes
        update the agent before each step (once the seed steps are done) and fill the replay."""
        cfg, agent = self.cfg, self.agent
        batch, utd, gamma = agent.config.batch_size, agent.config.updates_per_step, agent.config.discount
        obs = env.reset(seed)
        total, success, n = 0.0, False, 0
        while True:
            if not eval_mode and self.global_step >= agent.config.num_seed_steps and len(self.replay) >= batch:
                for _ in range(utd):
                    self._last_metrics = agent.update(self.replay.sample(batch, gamma))
            action = agent.act(obs, self.global_step, eval_mode=eval_mode).numpy()
            st = env.step(action)
            if not eval_mode:
                self.replay.add(obs, action, st.reward * cfg.reward_scale, st.obs, st.terminal)
                self.global_step += 1
            total += st.reward
            success = success or bool(st.success)
            n += 1
            obs = st.obs
            if st.done:
                return total, success, n

    def policy(self) -> StatePolicy:
        """The agent's current deterministic actor as a :class:`StatePolicy`."""
        env = self.train_env
        config = StatePolicyConfig(task=self.task, obs_dim=env.obs_dim, action_dim=env.action_dim,
                                   hidden_dim=self.agent_cfg.hidden_dim, action_repeat=self.cfg.action_repeat)
        return StatePolicy.from_actor(self.agent.actor, config)

    def evaluate(self) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.time()
        results = [self._run_episode(self.eval_env, episode_seed(cfg.seed, i, True), eval_mode=True)
                   for i in range(cfg.eval_episodes)]
        row = {"frames": self.global_step * cfg.action_repeat, "episode": self.global_episode,
               "success_rate": float(np.mean([s for _, s, _ in results])),
               "episode_return": float(np.mean([r for r, _, _ in results])), "eval_seconds": time.time() - t0}
        self.eval_log.log(self.global_step, **row)
        self.last_eval_step = self.global_step
        score = [row["success_rate"], row["episode_return"]]
        if self.best is None or score > self.best:
            self.best = score
            self.policy().save_pretrained(os.path.join(cfg.out, "model"))
        if not cfg.quiet:
            print(f"[eval] step {self.global_step}: success {row['success_rate']:.2f} return "
                  f"{row['episode_return']:.1f} ({row['eval_seconds']:.1f}s)", flush=True)
        return row

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.last_eval_step is None:
            self.evaluate()
        while self.global_step < cfg.steps:
            t0 = time.time()
            ret, success, n = self._run_episode(self.train_env, episode_seed(cfg.seed, self.global_episode, False),
                                                eval_mode=False)
            dt = time.time() - t0
            self.train_time += dt
            self.global_episode += 1
            row = {"frames": self.global_step * cfg.action_repeat, "episode": self.global_episode,
                   "episode_return": ret, "episode_success": float(success), "steps_per_second": n / dt,
                   "buffer_transitions": len(self.replay), **self._last_metrics}
            self.train_log.log(self.global_step, **row)
            if not cfg.quiet:
                print(f"[train] step {self.global_step:>8} ep {self.global_episode:>5} | return {ret:8.1f} | "
                      f"success {int(success)} | {row['steps_per_second']:6.1f} steps/s", flush=True)
            done = self.global_step >= cfg.steps
            if done or self.global_step - self.last_eval_step >= cfg.eval_every:
                self.evaluate()
            if done or (cfg.snapshot_every and self.global_step - self.last_snapshot_step >= cfg.snapshot_every):
                self.save_snapshot()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        steps, succ = self.eval_log.series("success_rate")
        _, ret = self.eval_log.series("episode_return")
        frames = [s * self.cfg.action_repeat for s in steps]
        plot_learning_curves(os.path.join(self.cfg.out, "curves.png"),
                             {"SAC": {"frames": frames, "success_rate": succ, "episode_return": ret}},
                             title=f"{self.task} · SAC on the {self.cfg.reward} reward · seed {self.cfg.seed}")
        self.policy().save_pretrained(os.path.join(self.cfg.out, "final_model"))
        self.train_log.close()
        self.eval_log.close()
        return {"steps": self.global_step, "frames": self.global_step * self.cfg.action_repeat,
                "episodes": self.global_episode, "eval_steps": steps, "success_rate": succ, "episode_return": ret,
                "best": self.best, "train_seconds": self.train_time,
                "steps_per_second": self.global_step / self.train_time if self.train_time else float("nan")}

    # ------------------------------------------------------------------ snapshots
    def _fingerprint(self) -> dict:
        """Settings a resumed run must share with the run it continues."""
        c = self.cfg
        return {"task": self.task, "seed": c.seed, "action_repeat": c.action_repeat, "episode_steps": c.episode_steps,
                "replay_size": c.replay_size, "reward": c.reward,
                "reward_scale": c.reward_scale, "agent": asdict(self.agent_cfg)}

    def save_snapshot(self) -> None:
        """``<out>/checkpoint-<step>`` as one unit (the newest two are kept)."""
        self.last_snapshot_step = self.global_step
        self.snapshots.save(self.global_step, {
            "fingerprint": fingerprint_text(self._fingerprint()), "config": asdict(self.cfg),
            "agent": self.agent.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.agent.optimizers().items()},
            "generator": self.agent.generator.get_state(), "replay": self.replay.state(), "rng": rng_state(),
            "counters": {"step": self.global_step, "episode": self.global_episode,
                         "last_eval_step": self.last_eval_step, "last_snapshot_step": self.last_snapshot_step,
                         "best": self.best, "train_time": self.train_time, "last_metrics": self._last_metrics},
        })

    def _restore(self, st: dict) -> None:
        self.agent.load_state_dict(st["agent"])
        for k, o in self.agent.optimizers().items():
            o.load_state_dict(st["optimizers"][k])
        self.agent.generator.set_state(st["generator"])
        self.replay.load(st["replay"])
        set_rng_state(st["rng"])
        c = st["counters"]
        self.global_step, self.global_episode = c["step"], c["episode"]
        self.last_eval_step, self.last_snapshot_step = c["last_eval_step"], c["last_snapshot_step"]
        self.best, self.train_time = c["best"], c["train_time"]
        self._last_metrics = dict(c["last_metrics"])

    def close(self) -> None:
        for env in (self.train_env, self.eval_env):
            if env is not None:
                env.close()
        unlock_run_folder(self.cfg.out)  # the run folder's lock (start_run): another process may continue it


# reset seeds of evaluate_expert's episodes: above every training / training-time evaluation seed of
# runs with seeds below ~500 (episode_seed), so the policy is judged on scenes it was not selected on
HELDOUT_SEED_BASE = 1_500_000_000


def evaluate_expert(model: str, *, episodes: int = 50, seed: int = 0, reward: str = "dense",
                    episode_steps: Optional[int] = None, make_env: Optional[Callable[[], Any]] = None) -> dict[str, Any]:
    """Success rate of the saved policy ``model`` (folder or run folder) on ``episodes`` episodes of its
    task (state observations, deterministic actions, the action repeat it was trained with); scenes
    from reset seeds ``HELDOUT_SEED_BASE + 1000·seed + i``. Success: at any step, as in training.
    Returns the counts, the rate with its 95 % Wilson interval, the mean return (of ``reward``) and
    the seeds. ``make_env`` (tests) replaces the Adroit environment."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if episode_steps is not None and episode_steps < 1:  # named as given here, not as the env's max_steps
        raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
    if isinstance(model, os.PathLike):  # the summary's "model" as a string
        model = os.fspath(model)
    folder = policy_folder(model)
    policy = StatePolicy.from_pretrained(folder)
    if make_env is None:
        from ..envs.adroit import AdroitStateEnv

        task = expert_task(policy.config.task)

        def make_env():
            return AdroitStateEnv(task, action_repeat=policy.config.action_repeat, max_steps=episode_steps,
                                  reward=reward)

    env = make_env()
    try:
        if env.obs_dim != policy.config.obs_dim or env.action_dim != policy.config.action_dim:
            raise ValueError(f"the policy in {model} takes [{policy.config.obs_dim}] observations and gives "
                             f"[{policy.config.action_dim}] actions; {env.task} has {env.obs_dim} / {env.action_dim}")
        seeds = [(HELDOUT_SEED_BASE + 1000 * seed + i) % (2 ** 31 - 1) for i in range(episodes)]
        wins, returns, t0 = [], [], time.time()
        for s in seeds:
            obs, total, success = env.reset(s), 0.0, False
            while True:
                st = env.step(policy.act(obs))
                total, success, obs = total + st.reward, success or bool(st.success), st.obs
                if st.done:
                    break
            wins.append(success)
            returns.append(total)
    finally:
        env.close()
    k = int(sum(wins))
    lo, hi = wilson_interval(k, episodes)
    return {"model": folder, "task": policy.config.task, "episodes": episodes, "successes": k,
            "success_rate": k / episodes, "success_rate_ci95": [lo, hi], "episode_return": float(np.mean(returns)),
            "reward": reward, "seeds": [seeds[0], seeds[-1]], "seconds": time.time() - t0}


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate k / n."""
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (0.0 if k == 0 else float(centre - half)), (1.0 if k == n else float(centre + half))


def t_interval(values: list[float], level: float = 0.95) -> list[float]:
    """The ``level`` t-interval of the mean of ``values`` (n − 1 degrees of freedom); NaNs below 2 values."""
    n = len(values)
    if n < 2:
        return [float("nan"), float("nan")]
    from scipy.stats import t

    mean = float(np.mean(values))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * float(np.std(values, ddof=1)) / n ** 0.5
    return [mean - half, mean + half]


def train_expert(config: ExpertConfig, agent_config: Optional[SACConfig] = None,
                 make_env: Optional[Callable[[], Any]] = None) -> dict[str, Any]:
    """Train a SAC expert; returns a summary (evaluation curve, best evaluation, steps/s)."""
    trainer = ExpertTrainer(config, agent_config, make_env)
    try:
        return trainer.train()
    finally:
        trainer.close()
