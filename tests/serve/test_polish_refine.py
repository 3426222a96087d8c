"""``refine`` (PRM Clip / Delta refinement) is for step models only: it was accepted for any model with
per-part scores, so a video scorer's or Diffusion Reward's per-frame scores came back "refined" with a
G_0 that is neither the model's score nor a process reward."""
import base64

import httpx
import numpy as np
import pytest
from serve_toys import ToyStepScorer, ToyVideoScorer

from mmreward.core.inputs import StepSolution, VideoPrompt
from mmreward.serve.adapters import TRLRewardFunction, VerlRewardFunction
from mmreward.serve.config import ServeConfig
from mmreward.serve.protocol import ModelSpec, RequestError, parse_score_request

FRAMES = {"shape": [2, 4, 4, 3], "data": base64.b64encode(bytes(96)).decode()}


def test_refine_of_a_video_scorer_is_a_400_naming_the_model(start_server):
    url, row = start_server(ToyVideoScorer()), {"prompt": "p", "video": FRAMES}
    r = httpx.post(url + "/score", json={"inputs": [row], "refine": {"clip": 0.5}})
    assert r.status_code == 400 and "refine needs a step model" in r.text and "serve_toy_video" in r.text, r.text
    assert "per frame" in r.text
    r = httpx.post(url + "/score", json={"inputs": [row]})  # without refine: its per-frame scores, as before
    assert r.status_code == 200 and len(r.json()["parts"][0]) == 2


def test_refine_of_an_episode_model_is_refused(episode_model):
    spec = ModelSpec.of(episode_model)
    with pytest.raises(RequestError, match="refine needs a step model.*serve_toy_episode model scores per frame"):
        parse_score_request({"inputs": [{"frames": FRAMES}], "refine": {"delta": True}}, spec, ServeConfig())


class _StepsOrVideos(ToyVideoScorer):
    """A model taking steps and videos: only its step inputs can be refined."""

    model_type = "serve_toy_steps_or_videos"
    input_types = (VideoPrompt, StepSolution)


def test_a_model_with_steps_and_videos_refines_steps_only():
    spec = ModelSpec.of(_StepsOrVideos())
    steps = {"problem": "p", "steps": ["a", "b"]}
    req = parse_score_request({"inputs": [steps], "refine": {"clip": 0.5}}, spec, ServeConfig())
    assert req.refine == {"clip": 0.5, "delta": False, "gamma": 1.0} and req.output == "parts"
    with pytest.raises(RequestError, match="input 1 is a VideoPrompt: refine works on step inputs"):
        parse_score_request({"inputs": [steps, {"prompt": "p", "video": FRAMES}], "refine": {"clip": 0.5}}, spec,
                            ServeConfig())


def test_the_adapters_refuse_refine_of_a_frame_model_as_the_server_does(start_server):
    video = ToyVideoScorer()
    with pytest.raises(ValueError, match="refine needs a step model.*serve_toy_video"):
        TRLRewardFunction(video, refine={"clip": 0.5})
    remote = VerlRewardFunction(start_server(video), refine={"clip": 0.5})  # the model is asked on first use
    with pytest.raises(ValueError, match="refine needs a step model.*serve_toy_video"):
        remote.refine()
    # a step model still refines, here and up front for a URL
    fn = TRLRewardFunction(ToyStepScorer(), refine={"clip": 0.5})
    assert np.isfinite(fn(["q"], ["a\n\nb"])[0])
    TRLRewardFunction("http://127.0.0.1:9", refine={"clip": 0.5, "delta": True})  # no server needed
