#!/usr/bin/env python3
"""Checks the deployment files against the code they deploy (issue 14).

    deploy_test.py SOURCE_DIR

Parses every manifest under deploy/k8s/, the Dockerfile and the packaged systemd units, and
checks the invariants a deployment depends on, reading the real values from the sources:
the orchestrator's and the worker's HTTP paths, the worker's drain timeout and cancel grace
period. Needs python3-yaml (scripts/setup.sh). Exits non-zero with every violation listed.
"""

import pathlib
import re
import sys

import json

import yaml

SOURCE = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
K8S = SOURCE / "deploy" / "k8s"
problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


# ---- What the code says ------------------------------------------------------------------

def duration_seconds(text):
    """A tamma duration ("10m", "30s", "1h", "500ms"), as src/common/units.cc reads it."""
    total, rest = 0.0, text.strip()
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", rest):
        total += float(number) * units[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?(ms|h|m|s))+", rest):
        raise ValueError(f"not a duration: {text!r}")
    return total


def systemd_seconds(text):
    """A systemd time span ("15min", "90s", "1h 30min")."""
    units = {"h": 3600, "hr": 3600, "min": 60, "m": 60, "s": 1, "sec": 1, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+)\s*(ms|min|hr|h|sec|s|m)?", text):
        total += float(number) * units.get(unit or "s")
    return total


def read(path):
    return (SOURCE / path).read_text()


orchestrator_routes = set(
    re.findall(r'router\.add\(\s*V::get,\s*"([^"]+)"', read("src/orchestrator/health_handlers.cc")))
worker_health_paths = set(re.findall(r'target != "(/[a-z]+)"', read("src/worker/health_server.cc")))
start_source = read("src/cli/worker_start.cc")
drain_default = duration_seconds(re.search(r'drain_timeout = "([^"]+)"', start_source).group(1))
config_header = read("src/worker/config.h")
grace_match = re.search(r"grace_period\{std::chrono::seconds\((\d+)\)\}", config_header)
cancel_grace = float(grace_match.group(1)) if grace_match else 10.0
# After the drain timeout the running tasks are cancelled (SIGTERM, SIGKILL after the grace
# period) and their results get 30 s more to be delivered (docs/daemon.md, "Signals").
DELIVERY_AFTER_CANCEL = 30.0

for needed in ("/health", "/ready"):
    if needed not in orchestrator_routes:
        problem("src/orchestrator/health_handlers.cc", f"no GET {needed} route found")
if "/health" not in worker_health_paths:
    problem("src/worker/health_server.cc", "no /health path found")


def worker_stop_budget(args):
    """Seconds a worker may take to stop after SIGTERM, from its arguments."""
    drain = drain_default
    if "--drain-timeout" in args:
        drain = duration_seconds(args[args.index("--drain-timeout") + 1])
    return drain + cancel_grace + DELIVERY_AFTER_CANCEL


# ---- Kubernetes manifests ------------------------------------------------------------------

documents = []  # (file name, document)
for path in sorted(K8S.glob("*.yaml")):
    try:
        loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        problem(path.name, f"does not parse: {e}")
        continue
    if not loaded:
        problem(path.name, "holds no document")
    for document in loaded:
        if not isinstance(document, dict) or "kind" not in document or "apiVersion" not in document:
            problem(path.name, "a document without apiVersion and kind")
            continue
        if document["kind"] != "Kustomization" and not document.get("metadata", {}).get("name"):
            problem(path.name, f"a {document['kind']} without metadata.name")
        documents.append((path.name, document))

if not documents:
    problem("deploy/k8s", "no manifests")

by_kind = {}
for name, document in documents:
    by_kind.setdefault(document["kind"], []).append((name, document))

# The kustomization names files that exist.
for name, document in by_kind.get("Kustomization", []):
    for resource in document.get("resources", []):
        if not (K8S / resource).is_file():
            problem(name, f"resource {resource} does not exist")

readme = (K8S / "README.md").read_text() if (K8S / "README.md").is_file() else ""
created_secrets = set(re.findall(r"create secret generic ([a-z0-9-]+)", readme))
secret_keys = {}  # secret name -> keys created
for found in re.finditer(r"create secret generic ([a-z0-9-]+)", readme):
    command = re.match(r"(?:[^\n]*\\\n)*[^\n]*", readme[found.start():]).group(0)
    secret_keys[found.group(1)] = set(re.findall(r"--from-literal=([a-z0-9-]+)=", command))
if not created_secrets:
    problem("deploy/k8s/README.md", "does not say how to create the Secrets")

TOKENISH = re.compile(r"(?i)token|password|secret|passwd")
LOOKS_SECRET = re.compile(r"^[0-9a-fA-F]{32,}$|^[A-Za-z0-9+/_-]{40,}={0,2}$")


def containers_of(document):
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    return spec, spec.get("containers", []) + spec.get("initContainers", [])


def check_no_literal_secrets(where, container):
    args = [str(a) for a in container.get("command", []) + container.get("args", [])]
    for i, arg in enumerate(args):
        if arg.startswith("--token") and not arg.startswith("--token-file"):
            problem(where, f"a token on the command line ({arg.split('=')[0]})")
        if LOOKS_SECRET.match(arg):
            problem(where, "an argument that looks like a credential")
        if re.search(r"postgres(ql)?://[^/@\s]*:[^/@\s]*@", arg):
            problem(where, "a database password in an argument")
    for env in container.get("env", []):
        name, value = env.get("name", ""), env.get("value")
        if value is None:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                check_secret_ref(where, ref.get("name"), ref.get("key"))
            continue
        value = str(value)
        if re.search(r"postgres(ql)?://[^/@\s]*:[^/@\s]*@", value):
            problem(where, f"a database password in the literal value of {name}")
        if TOKENISH.search(name) and not (name.endswith("_FILE") and value.startswith("/")):
            problem(where, f"{name} is a credential given as a literal value, not from a Secret")
        if LOOKS_SECRET.match(value):
            problem(where, f"the value of {name} looks like a credential")


def check_secret_ref(where, name, key=None):
    if name not in created_secrets:
        problem(where, f"Secret {name} is not one README.md says how to create")
    elif key is not None and secret_keys.get(name) and key not in secret_keys[name]:
        problem(where, f"Secret {name} has no key {key} in README.md")


def probe_command(probe):
    return " ".join(str(part) for part in probe.get("exec", {}).get("command", []))


def check_volumes(where, pod_spec):
    for volume in pod_spec.get("volumes", []):
        if "secret" in volume:
            secret = volume["secret"]
            check_secret_ref(where, secret.get("secretName"))
            for item in secret.get("items", []):
                check_secret_ref(where, secret.get("secretName"), item.get("key"))


for name, document in by_kind.get("ConfigMap", []):
    for key, value in document.get("data", {}).items():
        where = f"{name} ConfigMap {document['metadata']['name']}"
        if key.endswith(".json"):
            try:
                settings = json.loads(value)
            except ValueError as e:
                problem(where, f"{key} is not JSON: {e}")
                continue
            if "token" in settings:
                problem(where, f"{key} holds a token: use a Secret")
        elif re.search(r"(?i)token\s*[:=]", value):
            problem(where, f"{key} holds a token")

orchestrators, workers = [], []
for name, document in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []):
    pod_spec, containers = containers_of(document)
    where = f"{name} {document['kind']} {document['metadata']['name']}"
    check_volumes(where, pod_spec)
    for container in containers:
        check_no_literal_secrets(f"{where} container {container.get('name')}", container)
        args = [str(a) for a in container.get("command", []) + container.get("args", [])]
        if "tamma-orchestrator" in args and "serve" in args:
            orchestrators.append((where, document, pod_spec, container, args))
        elif "tamma-worker" in args and "start" in args:
            workers.append((where, document, pod_spec, container, args))

if not orchestrators:
    problem("deploy/k8s", "no tamma-orchestrator serve Deployment")
if len(workers) < 2:
    problem("deploy/k8s", "want a privileged and an unprivileged worker Deployment")

for where, document, pod_spec, container, args in orchestrators:
    env = {e["name"]: e for e in container.get("env", [])}
    db = args[args.index("--db") + 1] if "--db" in args else env.get("TAMMA_DB_URL", {}).get("value", "")
    replicas = document["spec"].get("replicas", 1)
    if replicas <= 1:
        problem(where, f"replicas {replicas}: run several")
    if replicas > 1 and not re.match(r"postgres(ql)?://|.*host=", db):
        problem(where, f"{replicas} replicas on {db or 'no database'}: several replicas need PostgreSQL")
    listen = args[args.index("--listen") + 1] if "--listen" in args else "127.0.0.1:8080"
    host, port = listen.rsplit(":", 1)
    if host in ("127.0.0.1", "localhost", "[::1]"):
        problem(where, f"--listen {listen} is loopback: the Service cannot reach it")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        if not probe:
            problem(where, f"no {kind}")
            continue
        want = "/ready" if kind == "readinessProbe" else "/health"
        if "httpGet" in probe:
            path = probe["httpGet"].get("path")
            probe_port = probe["httpGet"].get("port")
            probe_port = ports.get(probe_port, probe_port)
            if str(probe_port) != port:
                problem(where, f"{kind} on port {probe_port}, the server listens on {port}")
            if probe["httpGet"].get("httpHeaders"):
                for header in probe["httpGet"]["httpHeaders"]:
                    if header.get("name", "").lower() == "authorization":
                        problem(where, f"{kind} carries a literal Authorization header")
        else:
            command = probe_command(probe)
            found = re.search(r"https?://[^/\s]+:(\d+)(/[a-z]+)", command)
            path = found.group(2) if found else None
            if found and found.group(1) != port:
                problem(where, f"{kind} on port {found.group(1)}, the server listens on {port}")
            if "admin-token" in command and "/run/secrets/tamma/admin-token" not in command:
                problem(where, f"{kind} reads a token from elsewhere than the mounted Secret")
        if path != want:
            problem(where, f"{kind} on {path}, want {want}")
        if path not in orchestrator_routes:
            problem(where, f"{kind} path {path} is not served by the orchestrator")
    for file_var in ("TAMMA_ADMIN_TOKEN_FILE", "TAMMA_REGISTRATION_TOKEN_FILE"):
        if file_var not in env:
            problem(where, f"no {file_var}: every replica must take the same tokens")

unprivileged_seen = privileged_seen = False
for where, document, pod_spec, container, args in workers:
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    budget = worker_stop_budget(args)
    if grace <= budget:
        problem(where, f"terminationGracePeriodSeconds {grace} is not above the worker's stop "
                       f"budget of {budget:.0f} s (drain timeout + grace period + delivery)")
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if not pre_stop:
        problem(where, "no preStop hook")
    else:
        command = " ".join(str(c) for c in pre_stop.get("exec", {}).get("command", []))
        if "kill -TERM" not in command or "kill -0" not in command:
            problem(where, "the preStop hook must send SIGTERM (drain) and wait for the exit")
    liveness = container.get("livenessProbe")
    if not liveness:
        problem(where, "no livenessProbe")
    elif "httpGet" in liveness:
        path = liveness["httpGet"].get("path")
        if path not in worker_health_paths:
            problem(where, f"livenessProbe on {path}, which the worker does not serve")
        if "--health-listen" not in args:
            problem(where, "an httpGet liveness probe without --health-listen")
        else:
            listen = args[args.index("--health-listen") + 1]
            host, port = listen.rsplit(":", 1)
            if host in ("127.0.0.1", "localhost"):
                problem(where, f"--health-listen {listen}: the kubelet cannot reach loopback")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            probe_port = liveness["httpGet"].get("port")
            if str(ports.get(probe_port, probe_port)) != port:
                problem(where, f"livenessProbe on port {probe_port}, health listens on {port}")
    env = {e["name"]: e for e in container.get("env", [])}
    if "TAMMA_TOKEN" in env and "valueFrom" not in env["TAMMA_TOKEN"]:
        problem(where, "TAMMA_TOKEN as a literal")
    if "TAMMA_TOKEN_FILE" not in env and "TAMMA_TOKEN" not in env:
        problem(where, "no token source (TAMMA_TOKEN_FILE from a Secret)")
    security = container.get("securityContext", {})
    pod_security = pod_spec.get("securityContext", {})
    if security.get("privileged"):
        privileged_seen = True
    else:
        unprivileged_seen = True
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            problem(where, "an unprivileged worker must set runAsNonRoot")
        if security.get("allowPrivilegeEscalation") is not False:
            problem(where, "an unprivileged worker must set allowPrivilegeEscalation: false")
        # Its ConfigMap must say what it cannot do.
        config_name = next((v["configMap"]["name"] for v in pod_spec.get("volumes", [])
                            if "configMap" in v), None)
        for _, cm in by_kind.get("ConfigMap", []):
            if cm["metadata"]["name"] == config_name:
                settings = json.loads(cm["data"]["config.json"])
                # The unprivileged tier (ADR 0030): isolated without namespaces; the limits
                # the pod cannot enforce per task run degraded, each result saying so.
                if (settings.get("isolation") != "unprivileged" or settings.get("isolate") is False
                        or settings.get("allowDegraded") is not True):
                    problem(where, "an unprivileged worker's config.json needs isolation: "
                                   "unprivileged (not isolate: false) and allowDegraded: true")
if not privileged_seen:
    problem("deploy/k8s", "no privileged worker (the full sandbox)")
if not unprivileged_seen:
    problem("deploy/k8s", "no unprivileged worker")

# ---- Dockerfile ------------------------------------------------------------------------------

dockerfile = read("Dockerfile")
stages = re.findall(r"(?im)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile)
if len(stages) < 2:
    problem("Dockerfile", "not multi-stage")
for image, _ in stages:
    if not re.fullmatch(r"(docker\.io/(library/)?)?debian:(12|bookworm)([.-][a-z0-9.-]*)?(@sha256:[0-9a-f]{64})?",
                        image):
        problem("Dockerfile", f"FROM {image} is not a Debian 12 image")
parts = re.split(r"(?im)^FROM\s+", dockerfile)[1:]
if parts:
    runtime = parts[-1]
    installed = re.findall(r"apt-get install[^\n]*(?:\\\n[^\n]*)*", runtime)
    packages = " ".join(installed).split()
    dev = [p for p in packages if p.endswith("-dev") or p in ("g++", "gcc", "cmake", "ninja-build")]
    if dev:
        problem("Dockerfile", f"the runtime stage installs build packages: {dev}")
    for binary in ("tamma-worker", "tamma-orchestrator"):
        if not re.search(rf"COPY --from=\S+ .*{binary}", runtime):
            problem("Dockerfile", f"the runtime stage does not copy {binary}")
    build = parts[0]
    if "apt-get" not in build or "cmake" not in build:
        problem("Dockerfile", "the build stage must install its dependencies with apt-get and build")

# ---- systemd units ---------------------------------------------------------------------------

def unit(path):
    settings = {}
    for line in (SOURCE / path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


worker_unit = unit("packaging/systemd/tamma-worker.service")
exec_start = worker_unit.get("ExecStart", [""])[0].split()
where = "packaging/systemd/tamma-worker.service"
if exec_start[:2] != ["/usr/bin/tamma-worker", "start"]:
    problem(where, f"ExecStart is {' '.join(exec_start)}")
if any(a.startswith("--token") and not a.startswith("--token-file") for a in exec_start):
    problem(where, "a token on the command line")
stop = systemd_seconds(worker_unit.get("TimeoutStopSec", ["90s"])[0])
if stop <= worker_stop_budget(exec_start):
    problem(where, f"TimeoutStopSec {stop:.0f} s is not above the worker's stop budget of "
                   f"{worker_stop_budget(exec_start):.0f} s")
for key, want in (("Delegate", "yes"), ("KillMode", "mixed"), ("Restart", "on-failure")):
    if worker_unit.get(key, [""])[0] != want:
        problem(where, f"{key} is not {want}")
if not any(v.startswith("registration-token:") for v in worker_unit.get("LoadCredential", [])):
    problem(where, "no LoadCredential=registration-token:...")
if "registration-token" not in read("src/worker/config.cc"):
    problem("src/worker/config.cc", "does not read the registration-token credential")
orchestrator_unit = unit("packaging/systemd/tamma-orchestrator.service")
where = "packaging/systemd/tamma-orchestrator.service"
credentials = [v.split(":")[0] for v in orchestrator_unit.get("LoadCredential", [])]
for credential, variable in (("admin-token", "TAMMA_ADMIN_TOKEN_FILE"),
                             ("registration-token", "TAMMA_REGISTRATION_TOKEN_FILE")):
    if credential not in credentials:
        problem(where, f"no LoadCredential={credential}:...")
    if f"{variable}=%d/{credential}" not in orchestrator_unit.get("Environment", []):
        problem(where, f"no Environment={variable}=%d/{credential}")
if orchestrator_unit.get("User", ["root"])[0] in ("root", "0"):
    problem(where, "runs as root")

if problems:
    print("FAILED:")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print(f"PASSED: {len(documents)} manifests, {len(orchestrators)} orchestrator and {len(workers)} "
      f"worker workloads, {len(stages)} Dockerfile stages, 2 systemd units; worker stop budget "
      f"{worker_stop_budget([]):.0f} s; orchestrator routes {sorted(orchestrator_routes)}")
