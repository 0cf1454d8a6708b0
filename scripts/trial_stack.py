"""The production stack on one machine, for a trial: PostgreSQL (the pgserver wheel), an S3-compatible
object store (moto in server mode), an MLflow tracking server on both, a Prefect server with a process
work pool and a worker serving the scheduled erasure deployment, and a DVC remote on the object store.

    make deploy-trial                                  # up in the foreground; Ctrl-C stops everything
    python scripts/trial_stack.py --dir outputs/trial  # the same; --help lists the ports and names

It writes ``<dir>/params.yaml`` (the repo's, pointed at the tracking server) and ``<dir>/env.sh`` (the
endpoints and the dummy S3 credentials) for the commands of docs/deploy.md. Production swaps pieces,
not code: a managed PostgreSQL for pgserver, MinIO or a cloud bucket for moto (docs/deploy.md).
tests/test_deploy_stack.py starts PostgreSQL, S3 and MLflow with these same functions.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# moto accepts any credentials; production takes real ones from the environment or an instance role.
TRIAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "trial", "AWS_SECRET_ACCESS_KEY": "trial", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen | None, log: Path | None, timeout: float = 180) -> None:
    """Waits until ``url`` answers 2xx.

    Raises:
        RuntimeError: ``process`` ended, or nothing answered within ``timeout`` seconds (with the log's tail).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if 200 <= answer.status < 300:
                    return
        except OSError:
            time.sleep(0.5)
        if process is not None and process.poll() is not None:
            break
    tail = log.read_text(errors="replace")[-4000:] if log and log.is_file() else ""
    raise RuntimeError(f"{url} did not come up:\n{tail}")


def start_postgres(data_dir: Path):
    """A PostgreSQL server on ``data_dir`` (created on first use), on a Unix socket in that folder.

    Returns:
        The pgserver handle; ``.get_uri()`` is its ``postgresql://`` URI, ``.cleanup()`` stops it.
    """
    import pgserver

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(Path(data_dir).resolve(), cleanup_mode="stop")


def create_database(server, name: str) -> str:
    """Creates database ``name`` unless it exists; returns its SQLAlchemy URI (the psycopg2 driver named:
    SQLAlchemy 2.1 would otherwise pick psycopg 3)."""
    if name not in server.psql(f"SELECT datname FROM pg_database WHERE datname = '{name}';"):
        server.psql(f"CREATE DATABASE {name};")
    return server.get_uri(name).replace("postgresql://", "postgresql+psycopg2://", 1)


def start_s3(port: int, log: Path) -> subprocess.Popen:
    """moto's S3-compatible server on 127.0.0.1:``port`` (state in memory: a trial, not storage)."""
    command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=log.open("a"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/moto-api/", process, log)
    return process


def create_bucket(endpoint: str, bucket: str) -> None:
    """Creates ``bucket`` on the S3 endpoint unless it exists."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", TRIAL_CREDENTIALS["AWS_ACCESS_KEY_ID"]),
        "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY", TRIAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
        "region_name": os.environ.get("AWS_DEFAULT_REGION", TRIAL_CREDENTIALS["AWS_DEFAULT_REGION"]),
    }


def s3_env(endpoint: str) -> dict[str, str]:
    """What MLflow (server and clients), boto3 and DVC need to reach the S3 endpoint."""
    return {**TRIAL_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL": endpoint}


def start_mlflow(backend_uri: str, artifacts: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port``: runs and the registry in ``backend_uri`` (PostgreSQL),
    artifacts proxied to ``artifacts`` (``s3://bucket/prefix``), so clients need no S3 credentials."""
    command = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts,
    ]  # fmt: skip
    full_env = {**os.environ, **env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(command, env=full_env, stdout=log.open("a"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/health", process, log)
    return process


def start_prefect(port: int, home: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:``port`` with its database under ``home``."""
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, **env, "PREFECT_HOME": str(home)}
    process = subprocess.Popen(command, env=full_env, stdout=log.open("a"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/api/health", process, log)
    return process


def stop(process: subprocess.Popen) -> None:
    """Terminates a started service and waits for it (kills it after 30 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def run(command: list[str], env: dict[str, str], cwd: Path = REPO) -> str:
    """Runs a command to its end; raises with its output on failure."""
    done = subprocess.run(command, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def trial_params(out: Path, tracking_uri: str) -> Path:
    """The repo's params.yaml with the registry on the tracking server (artifacts proxied to S3)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["registry"].update({"tracking_uri": tracking_uri, "artifact_location": "mlflow-artifacts:/unierase"})
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """Brings the stack up, prints its endpoints, and keeps it up until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO / "outputs/trial", help="state and logs of the trial")
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--s3-port", type=int, default=9000)
    parser.add_argument("--bucket", default="unierase")
    parser.add_argument("--work-pool", default="unierase-pool")
    parser.add_argument("--no-worker", action="store_true", help="deploy, but start no worker")
    args = parser.parse_args(argv)
    out = args.dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    services: list[subprocess.Popen] = []
    postgres = start_postgres(out / "pgdata")
    try:
        backend = create_database(postgres, "mlflow")
        endpoint = f"http://127.0.0.1:{args.s3_port}"
        services.append(start_s3(args.s3_port, out / "s3.log"))
        create_bucket(endpoint, args.bucket)
        env = s3_env(endpoint)
        artifacts = f"s3://{args.bucket}/mlflow"
        services.append(start_mlflow(backend, artifacts, args.mlflow_port, env, out / "mlflow.log"))
        tracking = f"http://127.0.0.1:{args.mlflow_port}"
        prefect_api = f"http://127.0.0.1:{args.prefect_port}/api"
        services.append(start_prefect(args.prefect_port, out / "prefect-home", env, out / "prefect.log"))
        env = {**env, "PREFECT_API_URL": prefect_api, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        params = trial_params(out, tracking)
        # DVC remote on the same bucket; --local keeps the endpoint and credentials out of git.
        run([str(BIN / "dvc"), "remote", "add", "--local", "-f", "-d", "trial", f"s3://{args.bucket}/dvc"], env)
        run([str(BIN / "dvc"), "remote", "modify", "--local", "trial", "endpointurl", endpoint], env)
        run([str(BIN / "prefect"), "work-pool", "create", args.work_pool, "--type", "process", "--overwrite"], env)
        params_arg = os.path.relpath(params, REPO)
        run([str(BIN / "unierase"), "schedule", "--work-pool", args.work_pool, "--params", params_arg], env)
        (out / "env.sh").write_text(
            "".join(f"export {k}={v}\n" for k, v in {**env, "MLFLOW_TRACKING_URI": tracking}.items())
        )
        if not args.no_worker:
            command = [str(BIN / "prefect"), "worker", "start", "--pool", args.work_pool, "--type", "process"]
            log = (out / "worker.log").open("a")
            services.append(
                subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            )
        print(f"PostgreSQL  {backend}")
        print(f"S3          {endpoint}  (bucket {args.bucket}: MLflow artifacts under mlflow/, DVC under dvc/)")
        print(f"MLflow      {tracking}   Prefect {prefect_api.removesuffix('/api')}")
        print(f"work pool   {args.work_pool} (process){'' if args.no_worker else ', one worker'}")
        print(f"params      {params}    env: source {out / 'env.sh'}")
        print("Ctrl-C stops the stack.", flush=True)
        while all(s.poll() is None for s in services):
            time.sleep(1)
        return 1  # a service died
    except KeyboardInterrupt:
        return 0
    finally:
        for service in reversed(services):
            stop(service)
        postgres.cleanup()


if __name__ == "__main__":
    sys.exit(main())
