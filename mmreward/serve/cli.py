"""``mmreward serve``: any reward model over HTTP with dynamic batching (or on Ray Serve with ``--ray``).

    mmreward serve --model runs/rm                                   # http://127.0.0.1:8000
    mmreward serve --model runs/prm --max-batch 64 --max-wait-ms 10 --refine-clip 0.5
    MMREWARD_SERVE_API_KEY=secret mmreward serve --model runs/rm --host 0.0.0.0
    mmreward serve --model runs/rm --ray --replicas 4
"""
from __future__ import annotations

from dataclasses import fields
from typing import Optional, Sequence

from mmreward.core.cli_config import CLIParser, add_config_options, config_from_args

from .config import RayServeConfig, ServeConfig


# ServeConfig fields only the single-process server reads (mmreward.serve.app's batcher and uvicorn)
LOCAL_SERVER_ONLY = ("bucket_batches", "shutdown_timeout_s", "log_level")


class _ServeParser(CLIParser):
    """:class:`CLIParser` that names the option a mistyped one most likely meant (``--max-batch-size`` as other
    servers spell it is ``--max-batch`` here): argparse only says the argument is unrecognized."""

    def error(self, message: str):  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            import difflib

            known = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
            hints = []
            for token in message.split(":", 1)[1].split():
                name = token.split("=", 1)[0]
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.75) if name.startswith("--") else []
                if close:
                    hints.append(f"did you mean {close[0]} (not {name})?")
            if hints:
                message += "; " + "; ".join(hints)
        super().error(message)


def build_parser() -> CLIParser:
    parser = _ServeParser(prog="mmreward serve", description="Serve a reward model over HTTP: POST /score (every "
                       "modality), POST /get_reward (OpenRLHF --remote_rm_url), GET /metrics, GET /healthz.")
    parser.add_argument("--model", required=True, help="model folder (anything mmreward.load opens)")
    add_config_options(parser.add_argument_group("server"), ServeConfig)
    ray = parser.add_argument_group("Ray Serve scale-out (--ray; needs mmreward[serve-ray])")
    ray.add_argument("--ray", action="store_true", help="serve on Ray Serve with model replicas")
    add_config_options(ray, RayServeConfig)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from mmreward.core.cli_config import unescape_separator

    args.step_separator = unescape_separator(args.step_separator)  # '\\n\\n' typed is a blank line
    config = config_from_args(ServeConfig, args)
    ray_config = config_from_args(RayServeConfig, args)
    if not args.ray:  # --replicas 4 without --ray would serve one model in this process, silently
        given = [f"--{f.name.replace('_', '-')}" for f in fields(RayServeConfig)
                 if getattr(ray_config, f.name) != getattr(RayServeConfig(), f.name)]
        if given:
            raise ValueError(f"{', '.join(given)} configure Ray Serve: add --ray")
    if args.ray:  # settings of the single-process server that Ray Serve has no use for: silently ignored
        defaults = {f.name: f.default for f in fields(ServeConfig)}
        given = [f"--{name.replace('_', '-')}" for name in LOCAL_SERVER_ONLY if getattr(config, name) != defaults[name]]
        if given:
            raise ValueError(f"{', '.join(given)} configure{'s' if len(given) == 1 else ''} the single-process server "
                             "(its length-bucketing batcher / uvicorn); under --ray, Ray Serve batches and serves HTTP "
                             "itself: drop " + ("it" if len(given) == 1 else "them") + " or leave out --ray")
    config.check_bind()
    if args.ray:
        from .ray import serve_ray

        serve_ray(args.model, config, ray_config)
    else:
        from .app import serve

        serve(args.model, config)
    return 0


__all__ = ["build_parser", "main"]
