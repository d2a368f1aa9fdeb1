"""Build and run the local Neo4j Community server of ``tools/neo4j-local`` (a JDK and Maven needed).

Used by the test suite (``tests/conftest.py``: one server per pytest session), by
``bench/store.py`` and by ``make neo4j-local`` (this file run as a script, in the foreground)::

    NEO4J_PASSWORD=... python tools/neo4j-local/neo4j_local.py [--data DIR] [--port 7687]

:func:`build` runs ``mvn package`` when the launcher is missing or older than its sources
(``target/classpath.txt`` lists the jars in the local Maven repository; nothing is bundled).
:class:`LocalNeo4j` starts the launcher with the password in the child's environment only (never
in argv or output), waits for its ready line and stops it; the JVM also stops when this process
dies, because its stdin is a pipe from here. The first start writes a class-data-sharing archive
(``target/neo4j-local.jsa``) at the JVM's clean exit, which later starts reuse to load faster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "target"
CLASSPATH_FILE = TARGET / "classpath.txt"
CDS_ARCHIVE = TARGET / "neo4j-local.jsa"
JAR = TARGET / "neo4j-local-1.0.0.jar"
MAIN_CLASS = "dev.neurflow.neo4jlocal.Main"
SOURCES = [HERE / "pom.xml", *sorted((HERE / "src").rglob("*.java"))]

# Neo4j's own launcher passes these so its page cache and Netty can use direct buffers.
JVM_FLAGS = [
    "--add-opens=java.base/java.nio=ALL-UNNAMED", "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED", "-Dio.netty.tryReflectionSetAccessible=true",
    "-XX:+ExitOnOutOfMemoryError", "-XX:-OmitStackTraceInFastThrow", "-Djdk.nio.maxCachedBufferSize=1024",
]


class Neo4jLocalError(RuntimeError):
    """The local server could not be built or started (the message is one line, without secrets)."""


def missing_tools() -> str | None:
    """Why the local server cannot be built here (no ``java``/``mvn``), or None when it can."""
    missing = [t for t in ("java", "mvn") if shutil.which(t) is None]
    if missing:
        return f"{' and '.join(missing)} not found: install a JDK 17+ and Maven to run the Neo4j tests locally"
    return None


def _stale() -> bool:
    if not CLASSPATH_FILE.exists() or not JAR.exists():
        return True
    built = CLASSPATH_FILE.stat().st_mtime
    return any(p.stat().st_mtime > built for p in SOURCES)


def build(*, quiet: bool = True) -> None:
    """``mvn package`` in tools/neo4j-local when the launcher is missing or stale (offline first)."""
    if not _stale():
        return
    why = missing_tools()
    if why:
        raise Neo4jLocalError(why)
    base = ["mvn", "-B", "-f", str(HERE / "pom.xml"), "package", *(["-q"] if quiet else [])]
    for cmd in (base[:1] + ["-o"] + base[1:], base):  # offline when ~/.m2 is warm, else download
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            CDS_ARCHIVE.unlink(missing_ok=True)  # the class path changed: make a new archive
            CLASSPATH_FILE.touch()
            return
    tail = " ".join((r.stdout + r.stderr).split()[-40:])
    raise Neo4jLocalError(f"building tools/neo4j-local failed (mvn package): {tail}")


def java_command(*, data_dir: str | os.PathLike[str], port: int = 0, heap: str = "512m",
                 pagecache: str = "128m", fast_start: bool = False, ignore_stdin: bool = False,
                 cds: bool = True, auth_lock: bool = True) -> list[str]:
    """The launcher's command line (no secrets in it). ``fast_start``: C1 JIT only (quicker
    start, slower long runs; for tests). ``cds``: use the class-data archive, or write it at
    exit when there is none yet (that costs tens of seconds once; CI skips it)."""
    cp = f"{JAR}{os.pathsep}{CLASSPATH_FILE.read_text().strip()}"
    share = ([] if not cds else [f"-XX:SharedArchiveFile={CDS_ARCHIVE}"] if CDS_ARCHIVE.exists()
             else [f"-XX:ArchiveClassesAtExit={CDS_ARCHIVE}"])
    return ["java", f"-Xms{heap}", f"-Xmx{heap}", *JVM_FLAGS, *share, "-Xlog:cds=off", "-Xlog:cds+dynamic=off",
            *(["-XX:TieredStopAtLevel=1"] if fast_start else []), "-cp", cp, MAIN_CLASS,
            "--data", str(data_dir), "--port", str(port), "--pagecache", pagecache,
            *(["--ignore-stdin"] if ignore_stdin else []), *([] if auth_lock else ["--no-auth-lock"])]


class LocalNeo4j:
    """One launcher process on ``data_dir``; ``start()`` returns its ``bolt://`` URI."""

    def __init__(self, data_dir: str | os.PathLike[str], *, password: str, port: int = 0, heap: str = "512m",
                 pagecache: str = "128m", fast_start: bool = False, cds: bool = True,
                 auth_lock: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.cds, self.auth_lock = cds, auth_lock
        self._password = password
        self.port, self.heap, self.pagecache, self.fast_start = port, heap, pagecache, fast_start
        self.proc: subprocess.Popen | None = None
        self.uri: str | None = None
        self.version: str | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.launcher.log"

    def start(self, *, timeout: float = 600.0) -> str:
        """Start the server (building the launcher first if needed) and wait for its ready line."""
        build()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NEO4J_PASSWORD": self._password}
        cmd = java_command(data_dir=self.data_dir, port=self.port, heap=self.heap, pagecache=self.pagecache,
                           fast_start=self.fast_start, cds=self.cds, auth_lock=self.auth_lock)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                     start_new_session=True)  # a Ctrl-C in the terminal reaches pytest, not the JVM
        log.close()
        ready: dict = {}
        done = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("neo4j_local") == "ready":
                    ready.update(msg)
                    break
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(timeout) or not ready:
            self.kill()
            text = self.log_path.read_text(errors="replace").strip().splitlines()
            last = next((ln for ln in reversed(text) if ln.startswith("neo4j-local:")), None)
            why = last or (f"no ready line within {timeout:.0f} s" if not done.is_set() else "it exited")
            raise Neo4jLocalError(f"the local Neo4j on {self.data_dir} did not start: {why} "
                                  f"(log: {self.log_path}, {self.data_dir / 'logs' / 'debug.log'})")
        self.uri, self.version = ready["uri"], ready.get("version")
        self.port = int(self.uri.rsplit(":", 1)[1])  # a restart keeps the same port, so the URI stays valid
        return self.uri

    def stop(self, *, timeout: float = 120.0) -> None:
        """Close its stdin (a clean shutdown), then SIGTERM, then SIGKILL if it hangs."""
        p = self.proc
        if p is None:
            return
        try:
            if p.stdin is not None:
                p.stdin.close()
            p.wait(timeout / 2)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout / 2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        finally:
            self._reap()

    def kill(self) -> None:
        """SIGKILL the JVM (as a crash would) and wait for it."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.kill()
        p.wait()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> "LocalNeo4j":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``make neo4j-local``: build, then run the server in the foreground until Ctrl-C."""
    import argparse

    ap = argparse.ArgumentParser(description="Run a local Neo4j Community server (Bolt on 127.0.0.1, auth on).")
    ap.add_argument("--data", default="neo4j-local-data", help="data directory (default ./neo4j-local-data)")
    ap.add_argument("--port", type=int, default=7687, help="Bolt port (0 = a free one; default 7687)")
    ap.add_argument("--heap", default="512m")
    ap.add_argument("--pagecache", default="256m")
    ap.add_argument("--build-only", action="store_true", help="build the launcher if stale, then exit")
    args = ap.parse_args(argv)
    if args.build_only:
        try:
            build(quiet=True)
        except Neo4jLocalError as e:
            print(f"neo4j-local: {e}", file=sys.stderr)
            return 2
        return 0
    if not os.environ.get("NEO4J_PASSWORD"):
        print("neo4j-local: set NEO4J_PASSWORD (8 or more characters) first; the user is neo4j", file=sys.stderr)
        return 2
    try:
        build(quiet=False)
    except Neo4jLocalError as e:
        print(f"neo4j-local: {e}", file=sys.stderr)
        return 2
    cmd = java_command(data_dir=Path(args.data).absolute(), port=args.port, heap=args.heap,
                       pagecache=args.pagecache, ignore_stdin=not sys.stdin.isatty())
    print(f"neo4j-local: starting Neo4j on {Path(args.data).absolute()} (heap {args.heap}, page cache "
          f"{args.pagecache}); Ctrl-C stops it", file=sys.stderr)
    os.execvp(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
