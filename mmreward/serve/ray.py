"""Scale-out on Ray Serve: the same HTTP API in front of N model replicas, batched by Ray Serve.

    mmreward serve --model runs/rm --ray --replicas 4 --max-batch 32 --max-wait-ms 5
    mmreward serve --model runs/rm --ray --min-replicas 1 --max-replicas 8     # autoscaling

Two deployments:

* ``ModelReplica`` (``--replicas`` / autoscaling ``--min-replicas``..``--max-replicas``, each with
  ``--replica-cpus`` / ``--replica-gpus``): loads the model with ``mmreward.load`` and scores through
  ``@serve.batch`` — Ray Serve's batching, with ``max_batch_size`` = ``--max-batch`` inputs
  (``batch_size_fn`` counts inputs, not calls), ``batch_wait_timeout_s`` = ``--max-wait-ms`` and
  ``max_concurrent_batches``; each Ray batch runs :func:`mmreward.serve.batcher.score_jobs`
  (length grouping, per-request error isolation) like the single-process server.
* ``Ingress`` (``--ingress-replicas``): the FastAPI app of :mod:`mmreward.serve.app` — the same
  routes, limits, API key and metrics — whose backend sends each request (in slices of at most
  ``--max-batch`` inputs) to the replicas through a deployment handle; Ray's back-pressure
  (``--max-queued-requests``) answers 503 + Retry-After.

Needs ``pip install mmreward[serve-ray]``. This module imports Ray; ``import mmreward.serve`` does not.
"""
from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any, Optional

from ray import serve
from ray.serve.exceptions import BackPressureError

from .app import check_model_options, create_app
from .batcher import Job, QueueFull, score_jobs
from .config import RayServeConfig, ServeConfig
from .metrics import ServeMetrics
from .protocol import ModelSpec

APP_NAME = "mmreward"


def _job_items(jobs: list) -> int:
    """Ray batch size in inputs: a call carries one slice of a request."""
    return sum(len(job.items) for job in jobs)


def _replica_class(config: ServeConfig, ray_config: RayServeConfig) -> type:
    """The model-replica class, with Ray's batch settings from the configs (fixed at decoration)."""

    class ModelReplica:
        def __init__(self, model_path: str, model_types: Optional[dict] = None):
            from mmreward.registry import load, register_model

            for model_type, target in (model_types or {}).items():
                register_model(model_type, target)
            self.model = load(model_path, device=config.device, dtype=config.dtype)
            self.spec = ModelSpec.of(self.model)

        def info(self) -> dict:
            return self.spec.to_json()

        @serve.batch(max_batch_size=config.max_batch, batch_wait_timeout_s=config.max_wait_ms / 1000.0,
                     max_concurrent_batches=ray_config.max_concurrent_batches, batch_size_fn=_job_items)
        async def score_batch(self, jobs: list) -> list:
            sizes: list[int] = []
            outcomes = await asyncio.to_thread(score_jobs, self.model, jobs, config.max_batch, config.max_padding,
                                               on_forward=lambda n, _s: sizes.append(n))
            # exceptions travel back as values: Ray would fail every call of the batch on a raise
            return [(out, max(sizes, default=0)) for out in outcomes]

        async def score(self, items: list, mode: str, offset: int = 0) -> tuple:
            return await self.score_batch(Job(items, mode, offset=offset))

    return ModelReplica


class RayBackend:
    """The app's backend under Ray: request slices → ``ModelReplica.score`` through a handle."""

    def __init__(self, replicas: Any, spec: ModelSpec, config: ServeConfig):
        self.replicas, self.spec, self.max_batch = replicas, spec, config.max_batch
        self.metrics = ServeMetrics(queue_depth=lambda: self.queue_depth)
        self._in_flight = 0

    @property
    def queue_depth(self) -> int:
        """Inputs sent to the replicas and not yet answered (Ray holds the queue)."""
        return self._in_flight

    async def score(self, items: list, mode: str) -> list:
        starts = range(0, len(items), self.max_batch)
        self._in_flight += len(items)
        try:
            answers = await asyncio.gather(*(self.replicas.score.remote(items[i:i + self.max_batch], mode, i)
                                             for i in starts))
        except BackPressureError as e:
            raise QueueFull(f"the model replicas refuse more requests ({e})") from None
        finally:
            self._in_flight -= len(items)
        out = []
        for outcome, batch in answers:
            if isinstance(outcome, BaseException):
                raise outcome
            self.metrics.batch_size.observe(batch)
            out.extend(outcome)
        return out

    def close(self) -> None:
        pass  # Ray drains and stops the replicas on serve.shutdown()


@serve.ingress()
class Ingress:
    """HTTP front: the FastAPI app of :mod:`mmreward.serve.app` over the model replicas."""

    def __init__(self, replicas: Any, config: ServeConfig):
        self.replicas, self.config = replicas, config

    async def __serve_build_asgi_app__(self) -> Any:
        spec = ModelSpec.from_json(await self.replicas.info.remote())
        return create_app(RayBackend(self.replicas, spec, self.config), self.config)


def build_app(model_path: str, config: ServeConfig, ray_config: RayServeConfig,
              model_types: Optional[dict] = None) -> Any:
    """The Ray Serve application (``serve.run`` it). ``model_types``: extra ``{model_type:
    "module:Class"}`` entries each replica registers before ``mmreward.load`` (custom models)."""
    replica = serve.deployment(
        _replica_class(config, ray_config), name="ModelReplica",
        num_replicas=None if ray_config.autoscaling() else ray_config.replicas,
        autoscaling_config=ray_config.autoscaling(),
        max_ongoing_requests=ray_config.max_ongoing_requests,
        max_queued_requests=ray_config.max_queued_requests,
        ray_actor_options={"num_cpus": ray_config.replica_cpus, "num_gpus": ray_config.replica_gpus},
    )
    ingress = serve.deployment(Ingress, name="Ingress", num_replicas=ray_config.ingress_replicas,
                               max_ongoing_requests=max(ray_config.max_ongoing_requests, config.max_queue),
                               ray_actor_options={"num_cpus": 0})
    return ingress.bind(replica.bind(model_path, model_types), config)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the blocking wait like Ctrl-C


def serve_ray(model_path: str, config: ServeConfig, ray_config: RayServeConfig) -> None:
    """Start (or join) Ray, deploy :func:`build_app` on ``config.host:config.port`` and block until
    SIGTERM / Ctrl-C, then shut Ray Serve down (replicas finish their in-flight batches)."""
    import ray

    config.check_bind()
    if ray_config.ray_address is None:
        # a port in use (or a host that does not resolve): one line now, as the single-process server says it,
        # before Ray starts its cluster and HTTP proxy on that port. Not when joining a cluster: its Serve proxy
        # may hold the port already (a redeploy), and with ray:// the port is the head's, not this machine's
        from .app import bind

        bind(config)[0].close()
    from mmreward.registry import detect, resolve_folder

    folder = resolve_folder(model_path)
    # a folder no replica could load: one line now, not a failed deployment after Ray started
    _, loader = detect(folder)
    cls = getattr(loader, "__self__", None)  # a model type's class (a published layout's loader is a function)
    if isinstance(cls, type) and getattr(cls, "input_types", None) and callable(getattr(cls, "score", None)):
        has_parts = getattr(cls, "has_parts", None)  # options the model cannot use: refused before Ray starts
        check_model_options(ModelSpec(str(getattr(cls, "model_type", "") or cls.__name__), tuple(cls.input_types),
                                      bool(has_parts()) if callable(has_parts) else False), config)
    ray.init(address=ray_config.ray_address, include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": config.host, "port": config.port})
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve.run(build_app(folder, config, ray_config), name=APP_NAME, route_prefix="/")
        print(f"mmreward serve (Ray): {folder} on http://{config.host}:{config.port} with "
              f"{ray_config.replicas if not ray_config.autoscaling() else ray_config.autoscaling()} model replica(s)",
              file=sys.stderr, flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


__all__ = ["APP_NAME", "Ingress", "RayBackend", "build_app", "serve_ray"]
