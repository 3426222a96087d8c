"""Ray Serve scale-out on a local Ray instance (CPU, 2 model replicas): the same HTTP API, Ray's batching,
answers equal to offline scores."""
import asyncio
import os
import socket

import httpx
import pytest
from serve_toys import ToyConfig, ToyTextScorer, assert_same_scores

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install mmreward[serve-ray])")
serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install mmreward[serve-ray])")

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")])}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.mark.slow  # a local Ray with 3 actors: ~30-60 s on a 2-core machine
def test_two_replicas_batch_and_answer_like_offline_scores(local_ray, tmp_path):
    from mmreward.serve.config import RayServeConfig, ServeConfig
    from mmreward.serve.ray import build_app

    model = ToyTextScorer(ToyConfig(delay_s=0.05))
    model.save_pretrained(tmp_path / "toy")
    app = build_app(str(tmp_path / "toy"), ServeConfig(max_batch=8, max_wait_ms=30, max_items=16, max_queue=64),
                    RayServeConfig(replicas=2, replica_cpus=0.5), model_types={"serve_toy_text": "serve_toys:ToyTextScorer"})
    serve.run(app, name="mmreward", route_prefix="/")
    url = local_ray
    status = serve.status().applications["mmreward"].deployments["ModelReplica"]
    assert status.replica_states.get("RUNNING") == 2, status

    rows = [{"prompt": f"q{i}", "response": " ".join(f"w{i}_{k}" for k in range(2 + i % 6))} for i in range(48)]

    async def clients():
        async with httpx.AsyncClient(timeout=60) as client:
            single = await asyncio.gather(*(client.post(url + "/score", json={"inputs": [r]}) for r in rows))
            many = await client.post(url + "/score", json={"inputs": rows[:16]})
            return single, many

    single, many = asyncio.run(clients())
    assert all(a.status_code == 200 for a in single), [a.text for a in single if a.status_code != 200][:2]
    offline = model.score(rows).tolist()
    assert_same_scores([a.json()["scores"][0] for a in single], offline)
    assert_same_scores(many.json()["scores"], offline[:16])
    buckets = dict(line.rsplit(" ", 1) for line in httpx.get(url + "/metrics").text.splitlines()
                   if line.startswith("mmreward_serve_batch_size_bucket"))
    alone = int(buckets['mmreward_serve_batch_size_bucket{le="1"}'])
    total = int(buckets['mmreward_serve_batch_size_bucket{le="+Inf"}'])
    assert total == 50 and alone < 48, buckets  # Ray gathered the single-input calls into shared batches
    bad = httpx.post(url + "/score", json={"inputs": [{"prompt": "p", "response": "explode"}]})
    assert bad.status_code == 422 and "explode" in bad.json()["error"]
    mixed = rows[:16]
    mixed[11] = {"prompt": "p", "response": "please explode"}  # in the second slice of max_batch 8
    bad = httpx.post(url + "/score", json={"inputs": mixed})
    assert bad.status_code == 422 and bad.json()["error"].startswith("the model rejected input 11: "), bad.text
    assert httpx.post(url + "/score", content=b"{oops").status_code == 400
    assert httpx.get(url + "/info").json()["inputs"] == ["TextPair"]
    serve.delete("mmreward")
