"""Collect pixel episodes: Meta-World scripted experts, trained Adroit experts, noisy experts and
random policies, plus imported demonstration videos — all into one episode-folder format (see
:mod:`mmreward.robotics.data.episodes`).

Policies:

* ``expert``: the task's scripted policy from ``metaworld.policies``; for Adroit, a state-based policy
  trained with ``mmreward robotics train-expert`` (``expert_model``: its ``model/`` folder), acting on
  the environment's state observation while the frames are rendered as for any policy;
* ``noisy``: the expert's action plus Gaussian noise of standard deviation ``noise``, clipped to the
  action space (``noise`` in {0, 0.3, 0.6, 1.0} gives the reward-evaluation ladder);
* ``random``: actions uniform over the action space.

Determinism: episode ``i`` of a task uses environment seed ``seed + i`` (which fixes the object /
goal placement) and a policy-noise generator seeded from ``(seed, i, task)``; the same arguments
give identical files.
"""
from __future__ import annotations

import os
import re
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .data.episodes import Episode, episode_entry, save_episode, update_manifest

POLICIES = ("expert", "noisy", "random")


def _help(text: str, **kw) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class CollectConfig:
    """Arguments of :func:`collect_episodes`; the CLI's options are generated from these fields."""

    tasks: list = _help("task ids, e.g. door-open-v3,drawer-open-v3 (Meta-World) or adroit-door",
                        default_factory=lambda: ["door-open-v3"])
    out: str = _help("output folder (episode .npz files + manifest.json)", default="episodes")
    episodes: int = _help("episodes per task", default=10)
    policy: str = _help("expert | noisy | random", default="expert")
    expert_model: Optional[str] = _help("Adroit: the trained expert that acts for --policy expert / noisy "
                                        "(train-expert's OUT/model)", default=None)
    noise: float = _help("std of the Gaussian noise added to expert actions (policy noisy)", default=0.0)
    size: int = _help("frame height and width in pixels", default=64)
    camera: Optional[str] = _help("camera name (default: corner for Meta-World, vil_camera for Adroit)", default=None)
    action_repeat: int = _help("environment steps per agent step (one frame per agent step)", default=2)
    seed: int = _help("base seed: episode i uses seed + i", default=0)
    max_steps: Optional[int] = _help("cap on agent steps per episode, at most the task's time limit / "
                                     "action_repeat (default: that limit)", default=None)
    flip: str = _help("frame orientation fix: auto | none | vertical | horizontal | rot180", default="auto")
    progress: bool = _help("show a progress bar", default=True)


@dataclass
class ImportConfig:
    """Arguments of :func:`import_videos` besides the sources; the CLI's options are generated from these fields."""

    task: str = _help("task id / label for these episodes, e.g. adroit-door (known ids are canonicalised)",
                      default="demo")
    out: str = _help("output episode folder", default="episodes")
    size: int = _help("frame height and width in pixels", default=64)
    stride: int = _help("keep every n-th frame (e.g. 2 to match an action repeat of 2)", default=1)
    policy: str = _help("policy label stored in the manifest", default="demo")
    progress: bool = _help("show a progress bar", default=True)


@dataclass
class CollectSummary:
    out: str
    episodes: int
    successes: int
    frames: int
    seconds: float
    per_task: dict
    labelled: bool = True

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else float("nan")

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def lines(self) -> list[str]:
        rate = f"success rate {self.success_rate:.2f}" if self.labelled else "unlabelled (no rewards / success)"
        out = [f"{self.episodes} episodes, {rate}, {self.frames} frames, "
               f"{self.seconds:.1f} s ({self.frames_per_second:.1f} frames/s) -> {self.out}"]
        for task, (n, s) in self.per_task.items():
            out.append(f"  {task}: {s}/{n} successful" if self.labelled else f"  {task}: {n} episodes")
        return out


def policy_tag(policy: str, noise: float) -> str:
    return f"noisy{noise:g}" if policy == "noisy" else policy


def episode_file(task: str, policy: str, noise: float, seed: int, index: int) -> str:
    return f"{task}_{policy_tag(policy, noise)}_seed{seed}_{index:04d}.npz"


def _policy_rng(seed: int, index: int, task: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), zlib.crc32(task.encode())])


def rollout(env, act: Callable[[np.ndarray, int], np.ndarray], *, seed: int,
            max_steps: Optional[int] = None) -> Episode:
    """One episode in ``env`` (a :class:`~mmreward.robotics.envs.PixelEnv`) reset with ``seed``:
    ``act(obs, t)`` gives the action of agent step ``t`` (clipped to the action box); it ends when the
    env does or after ``max_steps`` steps."""
    low = np.asarray(env.action_space.low, dtype=np.float32)
    high = np.asarray(env.action_space.high, dtype=np.float32)
    obs, frame = env.reset(seed=seed)
    frames, actions, rewards, success = [frame], [], [], []
    t = 0
    while max_steps is None or t < max_steps:
        action = np.clip(act(obs, t), low, high).astype(np.float32)
        step = env.step(action)
        obs = step.obs
        frames.append(step.frame)
        actions.append(action)
        rewards.append(step.reward)
        success.append(step.success)
        t += 1
        if step.done:
            break
    return Episode(frames=np.stack(frames), actions=np.stack(actions), rewards=np.asarray(rewards, np.float32),
                   success=np.asarray(success, bool))


def run_episode(env, *, policy: str, noise: float, seed: int, rng: np.random.Generator,
                expert: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Episode:
    """One episode of ``policy`` (``random`` / ``expert`` / ``noisy``: the expert plus Gaussian action
    noise of std ``noise``) in ``env``, reset with ``seed``; ``rng`` draws the random actions and the
    noise. ``expert`` maps the state observation to an action (default: the env's scripted expert)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    if policy != "random" and expert is None and not getattr(env, "has_expert", True):
        raise ValueError(f"no scripted expert ships for {env.suite} task {env.task}: pass expert= (e.g. a trained "
                         f"StatePolicy's .act; `mmreward robotics train-expert`) or use policy='random'")
    low = np.asarray(env.action_space.low, dtype=np.float32)
    high = np.asarray(env.action_space.high, dtype=np.float32)
    expert = expert or env.expert_action

    def act(obs, t):
        if policy == "random":
            return rng.uniform(low, high).astype(np.float32)
        action = expert(obs)
        if policy == "noisy" and noise > 0:
            action = action + noise * rng.standard_normal(action.shape).astype(np.float32)
        return action

    return rollout(env, act, seed=seed)


def _check(policy: str, noise: float, episodes: int, seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite value >= 0, got {noise}")
    if policy != "noisy" and noise != 0:
        raise ValueError(f"noise={noise} only applies to --policy noisy (got policy {policy!r})")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")


def _check_frame_size(out: str, hw: tuple[int, int]) -> None:
    """Refuse to add ``hw`` frames to an episode folder holding episodes of another size: training on
    the folder would then fail, or resize, far from here."""
    from .data.episodes import manifest_path, read_manifest

    if not os.path.isfile(manifest_path(out)):
        return
    sizes = sorted({tuple(e["size"]) for e in read_manifest(out) if isinstance(e.get("size"), list)} - {tuple(hw)})
    if sizes:
        h, w = sizes[0]
        same = f"--size {h}" if h == w else f"size=({h}, {w})"  # the CLI's --size is one number (square frames)
        raise ValueError(f"{out} holds episodes of {h}x{w} frames; these would be {hw[0]}x{hw[1]}: use {same} "
                         "or another --out folder")


def _check_not_a_run(out: str) -> None:
    """Refuse an ``out`` that holds a training run or a saved model: the episodes and their manifest were
    written among its snapshots and logs (and a train-rl run there was no longer resumable)."""
    if not os.path.isdir(out):
        return
    names = os.listdir(out)
    if "config.json" in names:
        what = "a saved model (config.json)"
    elif "train_config.json" in names or any(n.startswith("checkpoint-") for n in names):
        what = "a training run (train_config.json / checkpoint-*)"
    else:
        return
    raise ValueError(f"--out {out} holds {what}, not an episode folder: collect into a folder of its own")


def _check_camera(tasks: Sequence[str], camera: Optional[str]) -> None:
    """Refuse, before the first episode, a ``camera`` that one of several tasks lacks (Meta-World's
    and Adroit's cameras differ, and so do Adroit's): each env checks its own model, but only when
    it is built, after the tasks before it have been collected."""
    if camera is None or len(tasks) < 2:
        return
    from .envs import suite_of
    from .envs.adroit import CAMERAS as ADROIT_CAMERAS
    from .envs.metaworld import CAMERAS as METAWORLD_CAMERAS

    for task in tasks:
        cams = ADROIT_CAMERAS.get(task, ()) if suite_of(task) == "adroit" else METAWORLD_CAMERAS
        if cams and camera not in cams:
            raise ValueError(f"--camera {camera!r} does not exist in {task} (its cameras: {', '.join(cams)}): collect "
                             "tasks that need different cameras in separate runs, or leave --camera out for each "
                             "suite's default")


def _file_label(label: str) -> str:
    """``label`` as a piece of a file name: path separators and other odd characters become '-', so a
    label such as '../x' or 'a/b' never names a file outside the episode folder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "task"


def _trained_experts(tasks: Sequence[str], policy: str, expert_model: Optional[str],
                     action_repeat: int) -> dict[str, tuple[Any, str]]:
    """``{adroit task: (StatePolicy, its absolute folder)}`` for the tasks whose expert is a trained
    policy, loaded and checked (task, action repeat) before any episode is collected."""
    from .envs import suite_of

    adroit = [t for t in tasks if suite_of(t) == "adroit"]
    if policy == "random" or not adroit:
        if expert_model is not None:
            raise ValueError("--expert-model applies to Adroit tasks with --policy expert or noisy "
                             f"(got policy {policy!r}, tasks {', '.join(tasks)})")
        return {}
    from .pretrained import shipped_expert
    from .rl.policy import StatePolicy, policy_folder

    out = {}
    for task in adroit:
        given = expert_model or shipped_expert(task)  # the shipped expert when none is given
        if given is None:
            from .envs.adroit import task_names

            shipped = [t for t in task_names() if shipped_expert(t) is not None]
            raise ValueError(f"no expert ships for {task} (shipped: {', '.join(shipped) or 'none'}): train one with "
                             f"`mmreward robotics train-expert --task {task} --out runs/expert-"
                             f"{task.removeprefix('adroit-')}` and pass --expert-model runs/expert-"
                             f"{task.removeprefix('adroit-')}/model (or use --policy random)")
        folder = policy_folder(given)  # a policy folder or a train-expert run folder
        expert = StatePolicy.from_pretrained(folder)
        if expert.config.task != task:
            raise ValueError(f"the expert in {given} was trained on {expert.config.task}, not {task}: collect "
                             "one Adroit task per expert model")
        if expert.config.action_repeat != action_repeat:
            raise ValueError(f"the expert in {given} acts with action repeat {expert.config.action_repeat}: "
                             f"collect with --action-repeat {expert.config.action_repeat} (got {action_repeat})")
        out[task] = (expert, os.path.abspath(folder))
    return out


def collect_episodes(tasks: Sequence[str] | str = ("door-open-v3",), out: str = "episodes", *, episodes: int = 10,
                     policy: str = "expert", expert_model: Optional[str] = None, noise: float = 0.0, size: Any = 64,
                     camera: Optional[str] = None, action_repeat: int = 2, seed: int = 0,
                     max_steps: Optional[int] = None, flip: str = "auto", progress: bool = True) -> CollectSummary:
    """Collect ``episodes`` episodes per task into ``out`` and update its manifest.

    Each episode file is written atomically as soon as it is finished and listed in the manifest right
    after, so an interrupted run (even a killed one) keeps everything it finished. Returns a summary (episodes,
    successes, frames, seconds, per-task successes).
    """
    from .envs import check_max_steps, make_env, resolve_task

    if isinstance(tasks, str):
        tasks = [t for t in re.split(r"[,\s]+", tasks) if t]
    from .envs.base import SEED_MAX, check_env_options, whole

    episodes = whole("episodes", episodes, 1)
    seed = whole("seed", seed, 0, SEED_MAX)
    check_env_options(seed, action_repeat, max_steps)
    _check(policy, float(noise), episodes, seed)
    resolved = [resolve_task(t) for t in tasks]  # unknown ids fail before any work
    if not resolved:
        raise ValueError("no tasks given")
    for i, task in enumerate(resolved):  # the second would overwrite the first's files (same names, same seeds)
        if task in resolved[:i]:
            raise ValueError(f"task {task} is listed twice (as {tasks[resolved.index(task)]!r} and {tasks[i]!r})")
    _check_camera(resolved, camera)
    # the environment caps episodes at the task's time limit: --max-steps 300 at action repeat 2 stored 250-step
    # episodes without a word; checked for every task here, not after the earlier tasks were collected
    check_max_steps(resolved, max_steps, action_repeat)
    experts = _trained_experts(resolved, policy, expert_model, action_repeat)
    from .envs.base import parse_size

    _check_not_a_run(out)
    _check_frame_size(out, parse_size(size))
    from tqdm.auto import tqdm

    os.makedirs(out, exist_ok=True)
    total_frames, total_success, per_task = 0, 0, {}
    start = time.perf_counter()
    bar = tqdm(total=len(resolved) * episodes, desc="collect", unit="ep", disable=not progress)
    try:
        for task in resolved:
            entries, wins = [], 0
            expert, expert_folder = experts.get(task, (None, None))
            expert_meta = {} if expert is None else {"expert_model": expert_folder}
            env = make_env(task, size=size, camera=camera, action_repeat=action_repeat, seed=seed,
                           max_steps=max_steps, flip=flip)
            try:
                for i in range(episodes):
                    ep_seed = seed + i
                    ep = run_episode(env, policy=policy, noise=float(noise), seed=ep_seed,
                                     rng=_policy_rng(seed, i, task), expert=None if expert is None else expert.act)
                    name = episode_file(task, policy, float(noise), seed, i)
                    save_episode(os.path.join(out, name), ep)
                    entries.append(episode_entry(
                        name, ep, task=task, suite=env.suite, policy=policy, noise=float(noise), seed=ep_seed,
                        base_seed=seed, index=i, camera=env.camera, flip=env.flip, action_repeat=env.action_repeat,
                        **expert_meta,
                    ))
                    # listed at once: a run killed mid-task (SIGKILL, no finally) kept the files it had
                    # finished but not their manifest entries, which every reader goes by
                    update_manifest(out, entries[-1:])
                    wins += int(ep.succeeded)
                    total_frames += ep.frames.shape[0]
                    bar.update(1)
                    bar.set_postfix(task=task, success=f"{wins}/{i + 1}")
            finally:
                env.close()
            per_task[task] = (episodes, wins)
            total_success += wins
    finally:
        bar.close()
    return CollectSummary(out=out, episodes=len(resolved) * episodes, successes=total_success, frames=total_frames,
                          seconds=time.perf_counter() - start, per_task=per_task)


def collect(config: CollectConfig) -> CollectSummary:
    """:func:`collect_episodes` from a :class:`CollectConfig`."""
    return collect_episodes(**asdict(config))


def _npz_frames(path: str, hw: tuple[int, int], stride: int) -> np.ndarray:
    """The uint8 ``frames`` [T, H, W, 3] of an ``.npz`` (every ``stride``-th, center-cropped and resized
    to ``hw``); other arrays are an error naming the file (never cast: float [0, 1] frames cast to uint8
    would be all 0 / 1)."""
    from mmreward.core.data import DataError

    from .data.episodes import load_frames_npz
    from .data.video import _finish

    frames = load_frames_npz(path)[0]
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
            and frames.shape[-1] == 3 and frames.shape[0] >= 1 and min(frames.shape[1:3]) >= 1):
        shape = list(getattr(frames, "shape", []))
        from .training import frames_hint

        raise DataError(f"{path}: 'frames' must be uint8 frames [T, H, W, 3] (channels last, 0..255) with T >= 1, "
                        f"got {getattr(frames, 'dtype', type(frames).__name__)} {shape}{frames_hint(frames)}")
    return _finish(list(frames), hw, stride, path)


def import_videos(sources: Sequence[str], out: str, *, task: str, size: Any = 64, stride: int = 1,
                  policy: str = "demo", progress: bool = True) -> CollectSummary:
    """Store videos / frame folders / ``.npz`` frame arrays as unlabelled episodes of ``task`` in ``out``
    (one file each, named ``<task>_<policy>_<source name>.npz``) and add them to the manifest (``policy`` label,
    ``labelled: false``: videos carry no actions, rewards or success flags, so those arrays are stored
    with zero action dimensions and NaN rewards).

    ``sources``: any mix of video files (``.mp4`` / ``.m4v`` / ``.avi`` / ``.mov`` / ``.mkv`` / ``.webm`` /
    ``.mpg`` / ``.mpeg`` / ``.gif``), frame folders (one per episode; ``.png`` / ``.jpg`` / ``.jpeg`` / ``.bmp``
    frames in natural name order, ``frame_2.png`` before ``frame_10.png``), ``.npz`` files with a uint8
    ``frames`` array ``[T, H, W, 3]`` (an episode file included) and parent folders of those (one episode
    each, in name order; a sub-folder without images is such a parent folder in turn; hidden names are
    skipped), e.g. your Adroit demonstrations::

        demos/adroit-door/
          episode_000.mp4
          episode_001/        # a frame folder
            000.png 001.png ...

    Frames are center-cropped to the target aspect ratio and resized to ``size``. ``task`` is any
    label (a known task id is canonicalised). ``stride`` keeps every n-th frame.
    """
    from tqdm.auto import tqdm

    from .data.video import check_stride, expand_sources, load_frames
    from .envs import resolve_task

    check_stride(stride)  # before the output folder is made
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"task must be a non-empty label, got {task!r}")
    task = task.strip()  # --tasks strips each label: " pick cup " stored as typed could never be selected
    if "," in task:  # --tasks splits at commas: the episodes of "pick,place" could never be selected again
        raise ValueError(f"task label {task!r} contains a comma, which --tasks uses to separate labels: use another "
                         "character (e.g. 'pick-place' or 'pick and place')")
    # "human demo" was stored as "human-demo" (and "" as "demo") without a word: `--policies "human demo"` then
    # selected nothing. The label names the files and --policies splits at commas and blanks
    if not isinstance(policy, str) or re.fullmatch(r"[A-Za-z0-9._-]+", policy) is None:
        raise ValueError(f"policy label {policy!r} may hold only letters, digits, '.', '_' and '-' (it names the "
                         "episode files, and --policies splits at commas and blanks): e.g. "
                         f"{re.sub(r'[^A-Za-z0-9._-]+', '-', str(policy)).strip('-') or 'demo'!r}")
    try:
        task = resolve_task(task)
    except (ValueError, ImportError):
        pass  # free-form labels are fine for user videos
    # .npz files (frames saved by the user's own code, or another folder's episode files) are demos too: a
    # folder of mp4 and npz demos imported only its videos, without a word about the .npz files
    if isinstance(sources, (str, os.PathLike)):  # one folder or file: its characters were read as paths
        sources = [sources]
    sources = [os.fspath(src) for src in sources]
    paths = expand_sources(list(sources), npz=True, skip=[out])  # out inside a source: not imported again
    if not paths:
        raise ValueError("no videos or frame folders given")
    from .data.video import VIDEO_EXTS, VideoError, format_hint

    seen: dict = {}
    for p in paths:  # `import-videos demos demos/ep_0.mp4`: ep_0 was stored twice (…_ep_0-2.npz), trained on twice
        first = seen.setdefault(os.path.realpath(p), p)
        if first is not p:
            also = f"also as {first}" if first != p else "by itself and inside a source folder, or twice"
            raise ValueError(f"{p} is given twice ({also}): give each demo once, or its episode would be stored twice")
    other = [p for p in paths if os.path.isfile(p) and not p.lower().endswith((*VIDEO_EXTS, ".npz"))]
    if other:  # named before any episode is stored, not when the import reaches it
        raise VideoError(f"{other[0]} is neither a video ({', '.join(VIDEO_EXTS)}), an .npz of frames nor a frame "
                         f"folder{format_hint(other[0])}")
    target = os.path.realpath(out)
    if any(os.path.realpath(src) == target for src in sources):
        raise ValueError(f"--out {out!r} is one of the sources: its episode files would be imported again; "
                         "name another output folder")
    paths = [p for p in paths if os.path.realpath(p) != target]  # the output folder inside a source folder
    inside = [p for p in paths if os.path.commonpath([target, os.path.realpath(p)]) == target]
    if inside:  # a shell glob of the output folder's own files (data/mine/*.npz --out data/mine)
        raise ValueError(f"{inside[0]} is inside --out {out!r}: its episode files would be imported again as new "
                         "episodes; import from another folder")
    from .envs.base import parse_size

    hw = parse_size(size)
    _check_frame_size(out, hw)
    os.makedirs(out, exist_ok=True)
    label = _file_label(task)  # the manifest keeps the task as given
    start, entries, frames = time.perf_counter(), [], 0
    used = set()
    # an episode an earlier import wrote (from another source: a/ep.mp4 then b/ep.mp4, or two names that are
    # both "-" once made ASCII) or any other file of the folder keeps its name: the new one takes a -k suffix.
    # The same source imported again replaces its own episode.
    from .data.episodes import manifest_path, read_manifest

    imported = {e["file"]: e.get("source") for e in read_manifest(out)} if os.path.isfile(manifest_path(out)) else {}

    def taken(name: str, source: str) -> bool:
        if name in used:
            return True
        if name in imported:
            return imported[name] != source
        return os.path.lexists(os.path.join(out, name))

    try:
        for path in tqdm(paths, desc="import", unit="video", disable=not progress):
            video = _npz_frames(path, hw, stride) if path.lower().endswith(".npz") else load_frames(path, size=hw,
                                                                                                  stride=stride)
            stem = re.sub(r"[^A-Za-z0-9._-]+", "-", os.path.splitext(os.path.basename(os.path.normpath(path)))[0])
            name = f"{label}_{policy}_{stem}.npz"
            k = 1
            while taken(name, os.path.abspath(path)):
                k += 1
                name = f"{label}_{policy}_{stem}-{k}.npz"
            used.add(name)
            steps = video.shape[0] - 1
            ep = Episode(frames=video, actions=np.zeros((steps, 0), np.float32),
                         rewards=np.full(steps, np.nan, np.float32), success=np.zeros(steps, bool), labelled=False)
            save_episode(os.path.join(out, name), ep)
            entries.append(episode_entry(name, ep, task=task, suite="video", policy=policy, noise=0.0, seed=None,
                                         camera=None, action_repeat=None, stride=stride,
                                         source=os.path.abspath(path)))
            frames += video.shape[0]
    except BaseException as e:
        # the episodes stored before a corrupt source (or Ctrl-C) were files the manifest did not list: a rerun
        # took their names as another source's and stored every demo again as "…-2.npz"
        if entries:
            update_manifest(out, entries)
            if isinstance(e, ValueError) and len(e.args) == 1 and isinstance(e.args[0], str):
                e.args = (f"{e.args[0]} ({len(entries)} of {len(paths)} sources were imported into {out} before it; "
                          "fix or remove it and run the same import again: it replaces their episodes)",)
        raise
    update_manifest(out, entries)
    return CollectSummary(out=out, episodes=len(entries), successes=0, frames=frames,
                          seconds=time.perf_counter() - start, per_task={task: (len(entries), 0)},
                          labelled=False)

