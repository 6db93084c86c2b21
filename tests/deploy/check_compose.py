#!/usr/bin/env python3
"""Checks the container deployment files without a container engine.

No Docker runs on the development machines, so the image is never built here; this script
checks what can be checked statically (scripts/test runs it after hadolint):

- docker-compose.yml: services redis, node1..node3 and lb exist; every node builds from the
  repository's Dockerfile, reaches the redis service through SIGNALBOX_BROKER, has a JWT
  secret and API keys whose local defaults pass the server's own checks (else it exits 2)
  and waits for redis; lb publishes 8080 and mounts deploy/haproxy/haproxy.cfg.
- deploy/haproxy/haproxy.cfg: round robin over node1..node3 on the container port, health
  checks on /health or /ready, `timeout tunnel` for WebSockets, bound on 8080.
- Dockerfile: multi-stage, a non-root final user, EXPOSE/SIGNALBOX_LISTEN on 8080, STOPSIGNAL
  SIGTERM, the signalbox entrypoint; every file it copies from the build context exists and
  is not excluded by .dockerignore; its dependency-layer placeholders cover every target
  path the workspace's manifests name, and every other workspace member's Cargo.toml is
  copied (else the placeholder build cannot load the workspace); every `cargo build` builds
  the server alone (`--locked --release -p signalbox --bin signalbox`).
- `haproxy -c` on the config when haproxy is installed (it is not required).

Exit status 0 when everything holds; 1 with one line per failure otherwise.
Usage: python3 tests/deploy/check_compose.py [repo-root]
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - scripts/test installs it
    sys.exit("check_compose: PyYAML is missing; run: python3 -m pip install pyyaml")

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]).resolve()
NODES = ("node1", "node2", "node3")
failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)


def interpolate_default(value: str) -> str:
    """Resolves compose's ${VAR:-default} / ${VAR-default} to the default, as on a clean shell."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def published_ports(service: dict) -> set[int]:
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                ports.add(int(str(entry["published"]).split("-")[0]))
        else:
            parts = str(entry).split("/")[0].split(":")
            if len(parts) >= 2:  # [ip:]published:target
                ports.add(int(parts[-2].split("-")[0]))
    return ports


# ---- Dockerfile ------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        fail(".dockerignore is missing")
        return []
    pats = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append(line)
    return pats


def ignored(rel: str, patterns: list[str]) -> bool:
    """Approximates Docker's matching: last matching pattern wins, `!` re-includes, a pattern
    that matches a parent directory excludes what is under it."""
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pat in patterns:
        negate = pat.startswith("!")
        p = pat[1:] if negate else pat
        p = p.strip("/")
        if p.startswith("**/"):
            cands = [p[3:]] + [p]
        else:
            cands = [p]
        for c in cands:
            if any(fnmatch.fnmatchcase(pre, c) for pre in prefixes) or any(
                fnmatch.fnmatchcase(part, c) for part in parts if p.startswith("**/")
            ):
                verdict = not negate
                break
    return verdict


def target_paths(manifest: dict, prefix: str = "") -> list[list[str]]:
    """The files one package manifest's targets need, each as its accepted spellings (a
    target without `path` may live in <dir>/<name>.rs or <dir>/<name>/main.rs), relative to
    the repository root (`prefix` is the member's directory, with a trailing slash)."""
    package = manifest.get("package", {}).get("name", "")
    dirs = {"bin": "src/bin", "test": "tests", "bench": "benches", "example": "examples"}
    paths = []
    for section, folder in dirs.items():
        for target in manifest.get(section, []):
            if "path" in target:
                paths.append([prefix + target["path"]])
            elif section == "bin" and target.get("name") == package:
                paths.append([prefix + "src/main.rs"])
            elif "name" in target:
                name = target["name"]
                paths.append([f"{prefix}{folder}/{name}.rs", f"{prefix}{folder}/{name}/main.rs"])
    if "package" in manifest:
        if "lib" in manifest or not manifest.get("bin"):
            # An explicit [lib], or a package that must find src/lib.rs or src/main.rs.
            lib = manifest.get("lib", {}).get("path", "src/lib.rs")
            paths.append([prefix + lib] if "lib" in manifest else [prefix + lib, prefix + "src/main.rs"])
    return paths


def workspace_members() -> list[str]:
    """The workspace members other than the root package, as directories relative to ROOT."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11: members = ["a", "b"] on one line
        m = re.search(r"^\s*members\s*=\s*\[([^\]]*)\]", (ROOT / "Cargo.toml").read_text(), re.M)
        members = re.findall(r'"([^"]+)"', m.group(1)) if m else []
    else:
        members = tomllib.loads((ROOT / "Cargo.toml").read_text()).get("workspace", {}).get("members", [])
    return [m.strip("/") for m in members if m.strip("/") not in ("", ".")]


def cargo_target_paths() -> list[list[str]]:
    """The files the workspace's manifests need to load: the root package's targets and every
    other member's targets (cargo loads every member's manifest, even to build only the
    server; check_dockerfile checks that the members' manifests are copied)."""
    text = (ROOT / "Cargo.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        return [[p] for p in re.findall(r'^\s*path\s*=\s*"([^"]+)"', text, re.M)]
    paths = target_paths(tomllib.loads(text))
    for member in workspace_members():
        manifest = ROOT / member / "Cargo.toml"
        if not manifest.exists():
            fail(f"Cargo.toml: workspace member {member} has no Cargo.toml")
            continue
        paths.extend(target_paths(tomllib.loads(manifest.read_text()), f"{member}/"))
    return paths


def check_dockerfile() -> int | None:
    path = ROOT / "Dockerfile"
    if not path.exists():
        fail("Dockerfile is missing")
        return None
    text = path.read_text()
    ins = dockerfile_instructions(text)
    froms = [a for i, a in ins if i == "FROM"]
    if len(froms) < 2:
        fail("Dockerfile: expected a multi-stage build (a builder and a runtime stage)")
    last_from = max(n for n, (i, _) in enumerate(ins) if i == "FROM")
    final = ins[last_from:]
    users = [a for i, a in final if i == "USER"]
    final_image = froms[-1] if froms else ""
    nonroot_base = final_image.endswith(":nonroot")
    if users:
        if users[-1].split(":")[0] in ("root", "0"):
            fail("Dockerfile: the runtime stage's last USER is root")
    elif not nonroot_base:
        fail("Dockerfile: the runtime stage sets no non-root USER")
    if not any(i == "STOPSIGNAL" and a == "SIGTERM" for i, a in final):
        fail("Dockerfile: STOPSIGNAL SIGTERM is missing from the runtime stage")
    exposed = {int(p.split("/")[0]) for i, a in final if i == "EXPOSE" for p in a.split()}
    listen = None
    for i, a in final:
        if i == "ENV":
            m = re.search(r"SIGNALBOX_LISTEN=(\S+)", a)
            if m:
                listen = m.group(1)
    port = None
    if not listen or not listen.startswith("0.0.0.0:"):
        fail(f"Dockerfile: ENV SIGNALBOX_LISTEN should be 0.0.0.0:<port>, is {listen!r}")
    else:
        port = int(listen.rsplit(":", 1)[1])
        if port not in exposed:
            fail(f"Dockerfile: SIGNALBOX_LISTEN port {port} is not in EXPOSE {sorted(exposed)}")
    if port != 8080:
        fail(f"Dockerfile: the container should listen on 8080 (is {port})")
    if not any(i == "ENTRYPOINT" and "signalbox" in a for i, a in final):
        fail("Dockerfile: ENTRYPOINT does not run signalbox")

    # Files copied from the build context must exist and must not be .dockerignore'd.
    patterns = dockerignore_patterns()
    for i, a in ins:
        if i not in ("COPY", "ADD"):
            continue
        words = [w for w in a.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in a.split()) or len(words) < 2:
            continue
        for src in words[:-1]:
            if not (ROOT / src).exists():
                fail(f"Dockerfile: COPY source {src} does not exist in the repository")
            elif ignored(src, patterns):
                fail(f"Dockerfile: COPY source {src} is excluded by .dockerignore")

    # The dependency layer builds a placeholder crate: every target path the workspace's
    # manifests name must be created or copied before it, and every other member's manifest
    # must be copied (a member directory that is only created would not load).
    copied = {
        w.rstrip("/")
        for i, a in ins
        if i in ("COPY", "ADD") and "--from" not in a
        for w in [w for w in a.split() if not w.startswith("--")][:-1]
    }
    for member in workspace_members():
        if f"{member}/Cargo.toml" not in copied:
            fail(
                f"Dockerfile: the workspace member {member} needs {member}/Cargo.toml copied before the "
                "dependency layer (cargo loads every member's manifest, even to build only the server)"
            )
    for spellings in cargo_target_paths():
        if not any(s in text for s in spellings):
            fail(
                f"Dockerfile: the workspace needs {spellings[0]}, which the dependency layer "
                "neither creates nor copies (the placeholder build would not load the manifest)"
            )
    # Every cargo build builds the server binary alone: never the load generator, whose
    # dependencies would otherwise be compiled into the builder (and could reach the image).
    builds = [cmd for i, a in ins if i == "RUN" for cmd in re.split(r"&&|;", a) if re.search(r"\bcargo\s+build\b", cmd)]
    if not builds:
        fail("Dockerfile: no cargo build")
    for cmd in builds:
        words = cmd.split()
        for must in ("--locked", "--release"):
            if must not in words:
                fail(f"Dockerfile: `{cmd.strip()}` should use {must}")
        if not re.search(r"(^|\s)(-p|--package)[\s=]signalbox(\s|$)", cmd):
            fail(f"Dockerfile: `{cmd.strip()}` should build only the server package (-p signalbox)")
        if not re.search(r"(^|\s)--bin[\s=]signalbox(\s|$)", cmd):
            fail(f"Dockerfile: `{cmd.strip()}` should build only the server binary (--bin signalbox)")
        if re.search(r"(^|\s)(--workspace|--all)(\s|$)", cmd):
            fail(f"Dockerfile: `{cmd.strip()}` builds the whole workspace")
    return port


# ---- haproxy.cfg -------------------------------------------------------------------------------

def check_haproxy(cfg: Path, port: int | None) -> None:
    text = cfg.read_text()
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not any(re.fullmatch(r"timeout\s+tunnel\s+\S+", ln) for ln in lines):
        fail("haproxy.cfg: `timeout tunnel` is missing (WebSockets would hit the client/server timeouts)")
    if "balance roundrobin" not in lines:
        fail("haproxy.cfg: the backend should `balance roundrobin`")
    if "mode http" not in lines:
        fail("haproxy.cfg: `mode http` is missing (needed to forward the WebSocket upgrade and run HTTP checks)")
    if not any(re.search(r"\buri\s+/(health|ready)\b", ln) or re.fullmatch(r"option\s+httpchk.*\s/(health|ready)\b.*", ln) for ln in lines):
        fail("haproxy.cfg: no HTTP health check on /health or /ready")
    if not any(re.fullmatch(r"bind\s+(\S*:)?8080\b.*", ln) for ln in lines):
        fail("haproxy.cfg: the frontend does not bind 8080")
    servers = {}
    for ln in lines:
        m = re.fullmatch(r"server\s+(\S+)\s+(\S+?):(\d+)\b(.*)", ln)
        if m:
            servers[m.group(2)] = (int(m.group(3)), m.group(4))
    for node in NODES:
        if node not in servers:
            fail(f"haproxy.cfg: no `server` line for {node}")
        elif port is not None and servers[node][0] != port:
            fail(f"haproxy.cfg: {node} is addressed on port {servers[node][0]}, the container listens on {port}")
    checked = any(re.match(r"default-server\b.*\bcheck\b", ln) for ln in lines)
    for node, (_, opts) in servers.items():
        if not checked and " check" not in f" {opts}":
            fail(f"haproxy.cfg: server {node} is not health-checked")
    if shutil.which("haproxy"):
        # Node names do not resolve outside compose; init-addr none lets the check pass anyway.
        r = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"haproxy.cfg: `haproxy -c` failed:\n{r.stdout}{r.stderr}")


# ---- docker-compose.yml ------------------------------------------------------------------------

def check_compose(port: int | None) -> None:
    path = ROOT / "docker-compose.yml"
    if not path.exists():
        fail("docker-compose.yml is missing")
        return
    doc = yaml.safe_load(path.read_text())  # resolves the x-node anchor and `<<` merges
    services = (doc or {}).get("services") or {}
    for name in ("redis", *NODES, "lb"):
        if name not in services:
            fail(f"docker-compose.yml: service {name} is missing")
    redis = services.get("redis") or {}
    if not str(redis.get("image", "")).startswith("redis:"):
        fail("docker-compose.yml: redis should run a redis image")

    for node in NODES:
        svc = services.get(node)
        if not svc:
            continue
        build = svc.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if not isinstance(build, dict):
            fail(f"docker-compose.yml: {node} is not built (no `build:`)")
        else:
            ctx = (ROOT / build.get("context", ".")).resolve()
            dockerfile = ctx / build.get("dockerfile", "Dockerfile")
            if ctx != ROOT or dockerfile.resolve() != (ROOT / "Dockerfile").resolve():
                fail(f"docker-compose.yml: {node} does not build from the repository's Dockerfile ({dockerfile})")
        env = env_of(svc)
        broker = env.get("SIGNALBOX_BROKER", "")
        m = re.fullmatch(r"rediss?://(?:[^@/]*@)?([^:/]+)(?::\d+)?(?:/\d+)?", broker)
        if not m:
            fail(f"docker-compose.yml: {node} has no redis SIGNALBOX_BROKER (is {broker!r})")
        elif m.group(1) not in services:
            fail(f"docker-compose.yml: {node}'s broker host {m.group(1)} is not a service")
        secret = interpolate_default(env.get("SIGNALBOX_JWT_SECRET", ""))
        if len(secret.encode()) < 16:
            fail(f"docker-compose.yml: {node}'s default SIGNALBOX_JWT_SECRET is shorter than 16 bytes (the node would exit 2)")
        keys = [k.strip() for k in interpolate_default(env.get("SIGNALBOX_API_KEYS", "")).split(",") if k.strip()]
        if not keys or any(len(k) < 8 for k in keys):
            fail(f"docker-compose.yml: {node}'s default SIGNALBOX_API_KEYS are missing or shorter than 8 characters")
        if str(env.get("SIGNALBOX_DEV", "")).lower() in ("1", "true", "yes", "on"):
            fail(f"docker-compose.yml: {node} runs in dev mode")
        deps = svc.get("depends_on") or []
        if "redis" not in deps:
            fail(f"docker-compose.yml: {node} does not depend on redis")

    lb = services.get("lb") or {}
    if 8080 not in published_ports(lb):
        fail(f"docker-compose.yml: lb does not publish 8080 (ports {lb.get('ports')})")
    cfg = None
    for vol in lb.get("volumes") or []:
        src = vol.get("source") if isinstance(vol, dict) else str(vol).split(":")[0]
        if src and src.endswith("haproxy.cfg"):
            cfg = (ROOT / src).resolve()
    if cfg is None:
        fail("docker-compose.yml: lb does not mount deploy/haproxy/haproxy.cfg")
    elif not cfg.exists():
        fail(f"docker-compose.yml: lb mounts {cfg}, which does not exist")
    else:
        check_haproxy(cfg, port)


def main() -> int:
    port = check_dockerfile()
    check_compose(port)
    if failures:
        for f in failures:
            print(f"check_compose: {f}", file=sys.stderr)
        return 1
    print("deploy files OK (Dockerfile, .dockerignore, docker-compose.yml, haproxy.cfg)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
