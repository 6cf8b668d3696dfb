"""A loopback Flower deployment (1 SuperLink + N SuperNodes) that always cleans up after itself.

Why here and not in a test: the deployment test, the fault test and a user trying the Flower
app on one machine need the same thing, and the hard part is the teardown. Flower's SuperLink
and SuperNodes each start a detached ``flower-superexec`` (its own session), which starts one
``flwr-serverapp`` / ``flwr-clientapp`` process per run or message, so killing our child's
process group alone can leave orphans. ``stop`` therefore snapshots every descendant through
``/proc`` *before* signalling, then SIGTERMs, waits (bounded) and SIGKILLs, all by PID.

Everything binds 127.0.0.1 on free ports, runs offline (no telemetry, no update check, no
runtime dependency installation) and keeps its state in a private ``FLWR_HOME`` per process.

    python -m ecolora.runtime.flower.local apps/flower -c 'fed.rounds=2 fed.clients=3'
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONNECTION = "local"
OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "PYTHONUNBUFFERED": "1",
    # SuperExec polls for new ServerApp/ClientApp tasks every 1 s by default; on loopback a
    # shorter period cuts idle time per message without measurable cost.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable(name: str) -> str:
    """A Flower console script of *this* interpreter's environment (not a shim elsewhere)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


def terminate(pids: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM, wait up to ``grace_s``, SIGKILL what is left; returns PIDs still alive."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 3.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if alive(p)]
        if not pids:
            break
    return pids


def toml_value(value: Any) -> str:
    """A run-config override value in the TOML form ``flwr run -c`` parses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string for ordinary text and paths


@dataclass
class RunOutcome:
    run_id: str
    status: str  # e.g. "finished:completed", "finished:failed"; "timeout" if never finished
    wall_s: float  # from `flwr run` to the end of the run (or the timeout)
    details: str = ""


@dataclass
class LocalDeployment:
    root: Path
    nodes: int = 3
    node_config: list[str] = field(default_factory=list)  # extra per node, e.g. 'k="v"'
    log_level: str = ""
    tls: Path | None = None  # folder with ca.crt, server.pem, server.key: TLS on every API
    node_keys: list[Path] = field(default_factory=list)  # OpenSSH EC private keys: node auth
    procs: list[subprocess.Popen] = field(default_factory=list, init=False)
    node_procs: list[subprocess.Popen] = field(default_factory=list, init=False)
    port: int = field(default=0, init=False)

    def env(self, home: str) -> dict[str, str]:
        env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(self.root / home)}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if self.log_level:
            env["FLWR_LOG_LEVEL"] = self.log_level
        (self.root / home).mkdir(parents=True, exist_ok=True)
        return env

    def _spawn(self, name: str, argv: list[str], home: str) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("wb")
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(home),
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    def start(self, ready_s: float = 60.0) -> None:
        """SuperLink, wait for its port, then the SuperNodes (the ServerApp waits for them).

        With ``node_keys`` the SuperLink enables SuperNode authentication and each node's public
        key (``KEY.pub``) is registered through the CLI before that node starts.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        if self.tls is not None:
            security = ["--ssl-ca-certfile", str(self.tls / "ca.crt"), "--ssl-certfile",
                        str(self.tls / "server.pem"), "--ssl-keyfile", str(self.tls / "server.key")]
            security += ["--enable-supernode-auth"] if self.node_keys else []
            conn = f'root-certificates = "{self.tls / "ca.crt"}"\n'
        else:
            security, conn = ["--insecure"], "insecure = true\n"
        self._spawn("superlink", [
            executable("flower-superlink"), *security,
            "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
            "--port", str(self.port)], "superlink")
        (self.root / "cli").mkdir(exist_ok=True)
        (self.root / "cli" / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\n{conn}', encoding="utf-8")
        self._wait_port(self.port, ready_s)
        for key in self.node_keys:
            res = self.flwr("supernode", "register", f"{key}.pub", CONNECTION)
            if res.returncode != 0:
                raise RuntimeError(f"flwr supernode register failed: {res.stdout}{res.stderr}")
        for i in range(self.nodes):
            self.node_procs.append(self.start_node(i))

    def start_node(self, i: int) -> subprocess.Popen:
        config = " ".join([f"partition-id={i}", f"num-partitions={self.nodes}",
                           *self.node_config_for(i)])
        if self.tls is not None:
            security = ["--root-certificates", str(self.tls / "ca.crt")]
            if i < len(self.node_keys):
                security += ["--auth-supernode-private-key", str(self.node_keys[i])]
        else:
            security = ["--insecure"]
        return self._spawn(f"supernode{i}", [
            executable("flower-supernode"), *security, "--superlink",
            f"127.0.0.1:{self.port}", "--host", "127.0.0.1", "--port", str(free_port()),
            "--node-config", config], f"supernode{i}")

    def node_config_for(self, i: int) -> list[str]:
        """Extra node-config for node ``i``: ``node_config`` entries are 'i:k=v' or 'k=v'."""
        out = []
        for item in self.node_config:
            head, sep, rest = item.partition(":")
            if sep and head.isdigit() and "=" not in head:
                if int(head) == i:
                    out.append(rest)
            else:
                out.append(item)
        return out

    def _wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a Flower process exited early; see {self.root}/*.log")
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"SuperLink did not listen on 127.0.0.1:{port} within {timeout}s")

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([executable("flwr"), *args], capture_output=True, text=True,
                              env=self.env("cli"), timeout=timeout, stdin=subprocess.DEVNULL)

    def submit(self, app: Path, overrides: dict[str, Any] | str = "") -> str:
        """``flwr run`` (returns at once with a run id; it does not wait for the run).

        ``overrides`` is a dict (values rendered as TOML) or a ready ``'k=v k2=v2'`` string.
        """
        if isinstance(overrides, dict):
            overrides = " ".join(f"{k}={toml_value(v)}" for k, v in overrides.items())
        args = ["run", str(app), CONNECTION, "--format", "json"]
        res = self.flwr(*args, *(["-c", overrides] if overrides else []))
        try:
            return str(json.loads(res.stdout)["run-id"])
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"flwr run failed: {res.stdout}\n{res.stderr}") from None

    def status(self, run_id: str) -> tuple[str, str]:
        """(status, details) from ``flwr ls --format json``: the truth about a run, since
        ``flwr run`` exits 0 even when the ServerApp later fails."""
        res = self.flwr("ls", CONNECTION, "--run-id", run_id, "--format", "json")
        try:
            run = json.loads(res.stdout)["runs"][0]
            return run["status"], run.get("status-details", "")
        except (ValueError, KeyError, IndexError, TypeError):
            return "unknown", (res.stdout + res.stderr)[-500:]

    def traffic(self, run_id: str) -> dict[str, int]:
        """Flower's own ``network-traffic`` counters for a run (inbound/outbound/total bytes)."""
        res = self.flwr("ls", CONNECTION, "--run-id", run_id, "--format", "json")
        try:
            return dict(json.loads(res.stdout)["runs"][0]["network-traffic"])
        except (ValueError, KeyError, IndexError, TypeError):
            return {}

    def wait(self, run_id: str, timeout: float, done_file: Path | None = None,
             start: float | None = None) -> RunOutcome:
        """Wait (bounded) until the run's status is ``finished:*``.

        ``done_file`` (e.g. the run's summary.json) is polled cheaply; ``flwr ls`` (a CLI
        start, ~1 s of CPU) only every few seconds, or right after the file shows up.
        """
        start = time.monotonic() if start is None else start
        deadline, next_ls = time.monotonic() + timeout, 0.0
        status, details = "timeout", ""
        while time.monotonic() < deadline:
            now = time.monotonic()
            done = done_file is not None and done_file.exists()
            if now >= next_ls or done:
                status, details = self.status(run_id)
                if status.startswith("finished"):
                    return RunOutcome(run_id, status, time.monotonic() - start, details)
                next_ls = now + (1.0 if done else 5.0)
            time.sleep(0.25)
        return RunOutcome(run_id, "timeout", time.monotonic() - start, f"last: {status} {details}")

    def run(self, app: Path, overrides: dict[str, Any] | str, timeout: float = 300.0,
            done_file: Path | None = None) -> RunOutcome:
        """Submit, then wait for the end of the run; ``wall_s`` counts from the submission."""
        start = time.monotonic()
        return self.wait(self.submit(app, overrides), timeout, done_file, start)

    def all_pids(self) -> list[int]:
        pids = []
        for proc in self.procs:
            pids += descendants(proc.pid)
            pids.append(proc.pid)
        return list(dict.fromkeys(pids))

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its SuperExec/ClientApp processes (a crashed machine)."""
        proc = self.node_procs[i]
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def stop(self) -> list[int]:
        """Tear everything down by PID (safe to call twice); returns PIDs that survived."""
        survivors = terminate(self.all_pids())
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                survivors.append(proc.pid)
        return survivors

    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
                         for p in sorted(self.root.glob("*.log")))


def launcher_config(config: str, nodes: int, cores: int | None = None) -> str:
    """The user's ``-c`` overrides plus what one machine hosting every node implies: one client
    per node, and each node a fixed share of the cores (``train.threads.core_share``)."""
    from ecolora.train.threads import core_share

    if "model.threads" not in config:
        config = f"model.threads={core_share(nodes, cores)} {config}"
    if "fed.clients" not in config:
        config = f"fed.clients={nodes} {config}"
    return config.strip()


def main(argv: list[str] | None = None) -> int:
    """Run the app once on a fresh loopback deployment: ``APP [-c 'k=v ...'] [--nodes N]``.

    The overrides are checked first (exit 2 and one ``error:`` line naming the key or value);
    the logs folder is kept when the run fails, and the results folder is printed.
    """
    import argparse
    import tempfile

    from ecolora.errors import EcoloraError
    from ecolora.runtime.flower.launch_check import check_run_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("app", type=Path)
    parser.add_argument("-c", "--run-config", default="", help="'k=v k2=v2' overrides (TOML)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    config = launcher_config(args.run_config, args.nodes)
    try:
        _, cfg, opts = check_run_config(args.app, config)
    except EcoloraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ecolora-flower-"))
    with LocalDeployment(tmp, nodes=args.nodes) as dep:
        run_id = dep.submit(args.app.resolve(), config)
        print(f"run {run_id} started on 127.0.0.1:{dep.port}; logs in {tmp}", flush=True)
        outcome = dep.wait(run_id, args.timeout)
    print(f"run {run_id}: {outcome.status} after {outcome.wall_s:.1f}s")
    if outcome.status != "finished:completed":
        print(f"error: run {run_id} did not complete ({outcome.details[:300]}); "
              f"logs kept in {tmp}", file=sys.stderr)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"results in {opts.out_dir(cfg).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
