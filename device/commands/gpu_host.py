"""`mgs-device gpu-host`: serve the shipped networks to devices that offload (runs all day).

Settings come from `--config FILE` (gpu-host.toml, what the systemd unit uses) and/or the flags;
a flag wins over the file. Start-up says which execution provider really runs the networks.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
from pathlib import Path

from device.gpu_host import PROVIDER_NAMES, GpuHost, GpuHostConfig, ServedModel, load_served_models, serve_triton
from mgs_core.tomlconfig import load_config, validate

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="gpu-host.toml (keys: transport, bind, http_port, models_dir, precision, providers, threads, max_batch, max_wait_ms)",
    )
    parser.add_argument(
        "--transport", choices=("zmq", "triton"), help="zmq (default) or triton (PyTriton, KServe v2 over HTTP)"
    )
    parser.add_argument("--bind", help=f"ZeroMQ endpoint to listen on (default {GpuHostConfig.bind})")
    parser.add_argument(
        "--http-port", type=int, help=f"transport triton: KServe v2 HTTP port (default {GpuHostConfig.http_port})"
    )
    parser.add_argument(
        "--models", type=Path, help="models directory (default: $MGS_MODELS_DIR or the installed models/)"
    )
    parser.add_argument(
        "--precision", choices=("int8", "fp32", "both"), help="shipped precisions to serve (default both)"
    )
    parser.add_argument(
        "--providers", help=f"comma-separated, best first, from {','.join(PROVIDER_NAMES)} (default cuda,cpu)"
    )
    parser.add_argument("--threads", type=int, help="onnxruntime threads per network (default: all cores)")
    parser.add_argument("--max-batch", type=int, help="most rows in one network call (default 64)")
    parser.add_argument(
        "--max-wait-ms", type=float, help="longest a request waits for others to share its batch (default 2)"
    )


def host_config(args: argparse.Namespace) -> GpuHostConfig:
    config = load_config(GpuHostConfig, args.config) if args.config else GpuHostConfig()
    overrides = {
        "transport": args.transport,
        "bind": args.bind,
        "http_port": args.http_port,
        "models_dir": args.models,
        "precision": args.precision,
        "threads": args.threads,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "providers": [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    validate(config)
    return config


def run(args: argparse.Namespace) -> int:
    config = host_config(args)
    models = load_served_models(config)
    stop = threading.Event()
    if config.transport == "triton":
        return run_triton(models, config, stop)
    host = GpuHost(models, config.bind, config.max_batch, config.max_wait_ms)

    def request_stop(*_: object) -> None:
        stop.set()
        host.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info(
        "gpu-host listening on %s with %s; serving %s; batches up to %d rows, %g ms wait",
        host.endpoint,
        ", ".join(host.providers),
        ", ".join(f"{m.name} {m.precision} {sha[:12]}" for sha, m in models.items()),
        config.max_batch,
        config.max_wait_ms,
    )
    host.start()
    while not stop.wait(60.0):
        s = host.stats
        log.info(
            "served %d request(s) in %d batch(es), %.1f rows per batch, %d refused",
            s.requests,
            s.batches,
            s.rows / max(s.batches, 1),
            s.rejected,
        )
    log.info("gpu-host stopped after %d request(s)", host.stats.requests)
    return 0


def run_triton(models: dict[str, ServedModel], config: GpuHostConfig, stop: threading.Event) -> int:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    providers = sorted({p for m in models.values() for p in m.runner.session.get_providers()})
    log.info(
        "gpu-host (PyTriton) on http://0.0.0.0:%d with %s; serving %s",
        config.http_port,
        ", ".join(providers),
        ", ".join(f"{m.name} {m.precision} {sha[:12]}" for sha, m in models.items()),
    )
    serve_triton(models, config, stop)
    log.info("gpu-host (PyTriton) stopped")
    return 0
