#!/usr/bin/env python3
"""Checks airlock's deployment artifacts without a cluster, Docker or Helm.

    python3 deploy/check.py                     # from the repository root
    AIRLOCK=target/debug/airlock python3 deploy/check.py   # also `airlock policy check`

What it checks, printing every problem and exiting 1 if there is any:

- Kubernetes: renders deploy/kubernetes/overlays/separate-pod,
  overlays/sidecar and agent-example with `kubectl kustomize` (or
  `kustomize build`), validates every object against the Kubernetes 1.30
  schemas, strictly (an unknown field is an error), and checks the security
  and durability invariants: every container non-root, read-only root
  filesystem, no privilege escalation, all capabilities dropped, seccomp
  RuntimeDefault; the gateway's liveness (/healthz) and readiness (/readyz)
  probes on its HTTP port; its journal on a volume claim template of a
  StatefulSet; a Service per listener; the projected token for the API
  server's JWKS; a PodDisruptionBudget and a NetworkPolicy; no several
  replicas on an SQLite store; that the agent example's identity (its
  projected token's claims, `iss` the policy's kubernetes issuer) is matched
  by an access rule of the policy, read as airlock reads rules: every
  matcher (groups, subjects, claims) must hold.
- Helm: renders deploy/helm/airlock with `helm` (HELM, or helm on PATH) and
  checks the result like the overlays, and that replicas > 1 on SQLite fails
  to render; without helm it says it skipped that. Always: the chart's
  default `config` equals the kustomize base's airlock.yaml.
- Compose: deploy/compose/compose.yaml against the Compose specification's
  JSON schema (vendored by check-jsonschema as vendor.compose-spec), plus
  the files it mounts and the variables airlock's config needs.
- The GitHub Actions example against the workflow schema.
- The Dockerfile: non-root final stage, ports, entrypoint, volume, the
  static build.
- Observability (deploy/observability): the Grafana dashboard is JSON with
  schemaVersion 39, the `datasource` and `door` variables and the expected
  panels, and its queries name only airlock's metrics (METRICS; a
  histogram's _bucket/_sum/_count too) and their labels; alerts.yaml has
  the expected alerts, each with severity, summary, description and a
  runbook_url that is a heading of docs/observability.md, fires in some
  case of alerts_test.yaml and stays silent in another; prometheusrule.yaml
  carries the same groups; docs/observability.md has a table row per
  metric. With promtool (PROMTOOL, or promtool on PATH): `promtool check
  rules`, `promtool test rules alerts_test.yaml`, and every dashboard query
  parsed as a recording rule; without promtool it says it skipped those.
- With AIRLOCK naming an airlock binary: `airlock policy check` on every
  airlock.yaml shipped here (compose, each overlay's ConfigMap, the chart's
  values), with its secret files, TLS material, CA bundles and data dir
  swapped for temporary ones so that the check runs anywhere.

Needs Python 3.11 and, from PyPI (scripts/setup.sh installs them):
    pip install 'kubernetes-validate>=1.30,<2' 'check-jsonschema>=0.33,<1'
(they bring PyYAML and jsonschema), kubectl (or kustomize) on PATH, and
openssl for the throwaway TLS certificate of the policy checks, and
promtool (Debian's prometheus package) for the rules' checks.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - a setup problem, said plainly
    sys.exit(
        f"deploy/check.py: {e}; run scripts/setup.sh or "
        "pip install 'kubernetes-validate>=1.30,<2' 'check-jsonschema>=0.33,<1'"
    )

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.30"
GATEWAY = "airlock"  # the gateway's container name
GATEWAY_LAYOUTS = ["overlays/separate-pod", "overlays/sidecar"]
AGENT = "agent-example"
WORKLOADS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.problems: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n== {title}")

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"ok    {what}")

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        line = f"{what}: {why}"
        self.problems.append(line)
        print(f"FAIL  {line}")

    def check(self, what: str, problems: list[str]) -> None:
        if problems:
            for p in problems:
                self.fail(what, p)
        else:
            self.ok(what)

    def skip(self, what: str, why: str) -> None:
        self.skipped += 1
        print(f"skip  {what}: {why}")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


# --------------------------------------------------------------------------
# Rendering

def kustomize(directory: Path) -> str:
    if shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(directory)]
    elif shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(directory)]
    else:
        raise RuntimeError("neither kubectl nor kustomize is on PATH")
    out = run(cmd)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out.stdout


def helm_binary() -> str | None:
    return os.environ.get("HELM") or shutil.which("helm")


# --------------------------------------------------------------------------
# Schemas

def validate_schemas(objects: list[dict]) -> list[str]:
    problems = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                continue  # a CRD (ServiceMonitor): no built-in schema
            problems.append(f"{name}: no Kubernetes {K8S_VERSION} schema for {obj.get('apiVersion')}")
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "(top)"
            problems.append(f"{name}: {where}: {e.message}")
        except Exception as e:  # a schema the validator cannot read: say so, go on
            problems.append(f"{name}: could not be validated: {type(e).__name__}: {e}")
    return problems


# --------------------------------------------------------------------------
# Invariants

def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind not in WORKLOADS:
        return None
    spec = obj.get("spec", {})
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def container_security(objects: list[dict]) -> list[str]:
    """Every container: non-root, read-only root, no escalation, no caps, seccomp."""
    problems = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        pod_sc = spec.get("securityContext") or {}
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            who = f"{obj['kind']}/{obj['metadata']['name']} container {c.get('name')}"
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True:
                problems.append(f"{who}: runAsNonRoot is not true")
            if uid == 0:
                problems.append(f"{who}: runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{who}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{who}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                problems.append(f"{who}: privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{who}: capabilities.drop does not include ALL")
            if (sc.get("capabilities") or {}).get("add"):
                problems.append(f"{who}: adds capabilities")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{who}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: uses host namespaces")
    return problems


def selects(selector: dict, labels: dict) -> bool:
    match = (selector or {}).get("matchLabels", selector or {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def mounted_under(path: str, mounts: list[dict]) -> dict | None:
    best = None
    for m in mounts:
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    return best


def walk_secrets(node, path=""):
    """Yields (key path, kind, value) for every {env: X} / {file: X} in a config."""
    if isinstance(node, dict):
        if len(node) == 1 and next(iter(node)) in ("env", "file") and isinstance(next(iter(node.values())), str):
            kind, value = next(iter(node.items()))
            yield path, kind, value
            return
        for k, v in node.items():
            yield from walk_secrets(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_secrets(v, f"{path}[{i}]")


def config_paths(config: dict) -> dict[str, str]:
    """The directories airlock writes: data_dir, journal, SQLite store."""
    data_dir = config.get("data_dir", "airlock-data")
    journal = (config.get("journal") or {}).get("dir", f"{data_dir}/journal")
    url = (config.get("store") or {}).get("url", f"sqlite://{data_dir}/airlock.db")
    paths = {"data_dir": data_dir, "journal.dir": journal}
    if url.startswith("sqlite://"):
        paths["store.url"] = url[len("sqlite://"):].split("?")[0]
    return paths


def listen_port(addr: str) -> int:
    return int(str(addr).rsplit(":", 1)[1])


def gateway_invariants(objects: list[dict], where: str) -> tuple[list[str], dict | None]:
    """The gateway's layout; returns the problems and its parsed airlock.yaml."""
    problems: list[str] = []
    workloads = [o for o in objects if pod_spec(o) is not None]
    gw = [(o, c) for o in workloads for c in containers(pod_spec(o)) if c.get("name") == GATEWAY]
    if len(gw) != 1:
        return [f"expected one container named {GATEWAY!r}, found {len(gw)}"], None
    workload, c = gw[0]
    spec = pod_spec(workload)
    labels = workload["spec"]["template"]["metadata"].get("labels", {}) if workload["kind"] != "Pod" else workload["metadata"].get("labels", {})
    wname = f"{workload['kind']}/{workload['metadata']['name']}"

    # Probes on the HTTP port.
    http_port = next((p for p in c.get("ports", []) if p.get("name") == "http"), None)
    if http_port is None:
        problems.append(f"{wname}: the gateway container has no port named http")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet")
        if not get:
            problems.append(f"{wname}: the gateway container has no {probe} (httpGet {path})")
            continue
        if get.get("path") != path:
            problems.append(f"{wname}: {probe} checks {get.get('path')!r}, not {path}")
        if http_port and get.get("port") not in ("http", http_port.get("containerPort")):
            problems.append(f"{wname}: {probe} is not on the HTTP port")

    # The configuration: a ConfigMap mounted where the args say.
    args = c.get("args") or []
    if args[:1] != ["serve"] or "--config" not in args:
        problems.append(f"{wname}: the gateway's args are {args}, not serve --config FILE")
        return problems, None
    config_file = args[args.index("--config") + 1]
    mounts = c.get("volumeMounts") or []
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mount = mounted_under(config_file, mounts)
    cm_name = (volumes.get(mount["name"], {}).get("configMap") or {}).get("name") if mount else None
    cm = next((o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name), None)
    rel = config_file[len(mount["mountPath"].rstrip("/")) + 1:] if mount else None
    if cm is None or rel not in (cm.get("data") or {}):
        problems.append(f"{wname}: {config_file} is not a key of a ConfigMap mounted there")
        return problems, None
    text = cm["data"][rel]
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problems.append(f"ConfigMap/{cm_name}: {rel} is not YAML: {e}")
        return problems, None

    # The journal and the store on a volume claim template of a StatefulSet:
    # a pod that dies leaves them for its successor, which ships the rest.
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates") or []}
    if workload["kind"] != "StatefulSet":
        problems.append(f"{wname}: the gateway is not a StatefulSet with a volume claim template for its journal")
    for key, path in config_paths(config).items():
        if not path.startswith("/"):
            problems.append(f"{rel}: {key} {path!r} is relative; give an absolute path on the data volume")
            continue
        m = mounted_under(path, mounts)
        if m is None or m["name"] not in claims:
            problems.append(f"{wname}: {key} {path} is not on a volume claim template (an audit event could die with the pod)")
        elif m.get("readOnly"):
            problems.append(f"{wname}: {key} {path} is on a read-only mount")
    replicas = workload["spec"].get("replicas", 1)
    store_url = (config.get("store") or {}).get("url", "")
    if replicas > 1 and not store_url.startswith("postgres://"):
        problems.append(f"{wname}: {replicas} replicas on an SQLite store; several replicas need store.url: postgres://…")

    # Every secret file the config names is in a mounted volume.
    for key, kind, value in walk_secrets(config):
        if kind == "file" and mounted_under(value, mounts) is None:
            problems.append(f"{rel}: {key}: {value} is on no volume of the gateway container")

    # A Service per listener, reaching the container port by name.
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    services = [o for o in objects if o["kind"] == "Service" and selects(o["spec"].get("selector"), labels)]
    for door, addr in (config.get("listen") or {}).items():
        port = listen_port(addr)
        if ports.get(door) != port:
            problems.append(f"{wname}: listen.{door} is port {port}, but the container port {door!r} is {ports.get(door)}")
        exposed = [s for s in services if s["spec"].get("clusterIP") != "None"
                   and any(p.get("targetPort") in (door, port) for p in s["spec"]["ports"])]
        if not exposed:
            problems.append(f"no Service exposes listen.{door} (port {port})")
    for s in services:
        for p in s["spec"]["ports"]:
            if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                problems.append(f"Service/{s['metadata']['name']}: targetPort {p.get('targetPort')} is no port of the gateway")

    # The gateway's own token for the API server's JWKS.
    jwks = [v for v in volumes.values()
            for src in (v.get("projected") or {}).get("sources") or []
            if (src.get("serviceAccountToken") or {}).get("path") == "jwks-token"]
    if not jwks:
        problems.append(f"{wname}: no projected service-account token at path jwks-token (the API server's JWKS)")
    elif not any(m["name"] == jwks[0]["name"] and m["mountPath"] == "/var/run/secrets/airlock" for m in mounts):
        problems.append(f"{wname}: the jwks-token volume is not mounted at /var/run/secrets/airlock")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{wname}: automountServiceAccountToken is not false")

    # Disruption budget and network policy for the gateway's pods.
    if not any(o["kind"] == "PodDisruptionBudget" and selects(o["spec"].get("selector"), labels) for o in objects):
        problems.append("no PodDisruptionBudget selects the gateway's pods")
    nps = [o for o in objects if o["kind"] == "NetworkPolicy" and selects(o["spec"].get("podSelector"), labels)]
    if not nps:
        problems.append("no NetworkPolicy selects the gateway's pods")
    for np in nps:
        types = np["spec"].get("policyTypes") or []
        if "Ingress" not in types or "Egress" not in types:
            problems.append(f"NetworkPolicy/{np['metadata']['name']}: policyTypes {types} lacks Ingress or Egress")
    return problems, config


def claim_path(path: str) -> list[str] | None:
    """A claim path's names, as airlock reads it: dots separate levels,
    `\\.` is a dot inside a name, `\\\\` a backslash; None if invalid."""
    names, cur, i = [], "", 0
    while i < len(path):
        c = path[i]
        if c == "\\":
            if i + 1 >= len(path) or path[i + 1] not in ".\\":
                return None
            cur += path[i + 1]
            i += 2
            continue
        if c == ".":
            names.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    names.append(cur)
    return names if all(names) else None


def claim_lookup(claims: dict, names: list[str]):
    """The value at `names`; at each level the longest existing name wins
    (`kubernetes.io` before `kubernetes`), as airlock does. None if missing."""
    for k in range(len(names), 0, -1):
        key = ".".join(names[:k])
        if key not in claims:
            continue
        value, rest = claims[key], names[k:]
        if not rest:
            return value
        if isinstance(value, dict):
            found = claim_lookup(value, rest)
            if found is not None:
                return found
    return None


def claim_accepts(value, wants: list[str]) -> bool:
    if isinstance(value, list):
        return any(not isinstance(v, list) and claim_accepts(v, wants) for v in value)
    if value is None or isinstance(value, dict):
        return False
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    # airlock's globs know only `*`; escape fnmatch's other metacharacters.
    return any(fnmatch.fnmatchcase(text, re.sub(r"([?\[])", r"[\1]", str(w))) for w in wants)


def rule_matches(rule: dict, claims: dict) -> bool:
    """Whether an access rule selects a principal with these token claims:
    every matcher it names (groups, subjects, claims) must hold."""
    if not (rule.get("groups") or rule.get("subjects") or rule.get("claims")):
        return False
    if rule.get("groups"):
        groups = claims.get("groups") or []
        if not any(g in groups for g in rule["groups"]):
            return False
    if rule.get("subjects"):
        if not claim_accepts(claims.get("sub"), rule["subjects"]):
            return False
    for path, want in (rule.get("claims") or {}).items():
        names = claim_path(path)
        wants = want if isinstance(want, list) else [want]
        if names is None or not claim_accepts(claim_lookup(claims, names), wants):
            return False
    return True


def agent_invariants(objects: list[dict], configs: dict[str, dict]) -> list[str]:
    problems = []
    pods = [o for o in objects if o["kind"] == "Pod"]
    if not pods:
        return ["no Pod"]
    for pod in pods:
        spec = pod["spec"]
        ns = pod["metadata"].get("namespace", "default")
        sa = spec.get("serviceAccountName", "default")
        name = f"Pod/{pod['metadata']['name']}"
        tokens = {v["name"]: src["serviceAccountToken"] for v in spec.get("volumes") or []
                  for src in (v.get("projected") or {}).get("sources") or [] if "serviceAccountToken" in src}
        airlock_tokens = {n: t for n, t in tokens.items() if t.get("audience") == "airlock"}
        if not airlock_tokens:
            problems.append(f"{name}: no projected service-account token with audience airlock")
            continue
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false")
        files = []
        for c in containers(spec):
            for m in c.get("volumeMounts") or []:
                if m["name"] in airlock_tokens:
                    files.append(f"{m['mountPath'].rstrip('/')}/{airlock_tokens[m['name']]['path']}")
        script = " ".join(" ".join(c.get("command") or []) + " " + " ".join(c.get("args") or []) for c in containers(spec))
        if not files or not any(re.search(r'PGPASSWORD="?\$\((cat\s+|<\s*)' + re.escape(f), script) for f in files):
            problems.append(f"{name}: psql does not read the airlock token file ({files}) as PGPASSWORD")
        if "airlock-postgres." not in yaml.safe_dump(spec):
            problems.append(f"{name}: does not connect to the airlock-postgres Service")
        subject = f"system:serviceaccount:{ns}:{sa}"
        for layout, config in configs.items():
            # The claims of the pod's projected token, as the API server
            # mints them, with `iss` the policy's kubernetes issuer.
            issuer = next((i.get("issuer") for i in (config.get("identity") or {}).get("issuers") or []
                           if i.get("name") == "kubernetes"), None)
            if issuer is None:
                problems.append(f"{layout}: the policy has no issuer named kubernetes for {subject}")
                continue
            claims = {"iss": issuer, "sub": subject, "aud": ["airlock"],
                      "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa}}}
            rules = [r["name"] for r in config.get("access") or [] if rule_matches(r, claims)]
            if not rules:
                problems.append(f"{layout}: no access rule matches {subject} (iss {issuer})")
    return problems


# --------------------------------------------------------------------------
# airlock policy check, on temporary copies

class PolicyChecker:
    def __init__(self, binary: str, tmp: Path) -> None:
        self.binary = binary
        self.tmp = tmp
        self.cert: tuple[Path, Path] | None = None

    def tls_pair(self) -> tuple[Path, Path]:
        if self.cert is None:
            crt, key = self.tmp / "tls.crt", self.tmp / "tls.key"
            out = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                       "-subj", "/CN=airlock-check", "-keyout", str(key), "-out", str(crt)])
            if out.returncode != 0:
                raise RuntimeError(f"openssl could not make a test certificate: {out.stderr.strip()}")
            self.cert = (crt, key)
        return self.cert

    def check(self, label: str, text: str) -> list[str]:
        """Runs `airlock policy check` on `text` with its secrets and data
        paths swapped for temporary ones; the line numbers stay the same."""
        config = yaml.safe_load(text)
        work = Path(tempfile.mkdtemp(prefix="cfg-", dir=self.tmp))
        env = dict(os.environ)
        replace: dict[str, str] = {}
        for key, kind, value in walk_secrets(config):
            if kind == "env":
                env[value] = f"check-{value.lower()}"
            elif key.endswith("tls.cert") or key.endswith("tls.key") or key.endswith(".ca"):
                # A certificate where one is read: TLS, an issuer's or an
                # upstream's CA bundle.
                crt, k = self.tls_pair()
                replace[value] = str(k if key.endswith("tls.key") else crt)
            else:
                f = work / f"secret-{len(replace)}"
                f.write_text("check-secret\n")
                replace[value] = str(f)
        data_dir = str(config.get("data_dir", ""))
        if data_dir.startswith("/"):
            replace[data_dir] = str(work / "data")
        for key, path in config_paths(config).items():
            inside = data_dir.startswith("/") and path.startswith(data_dir.rstrip("/") + "/")
            if key != "data_dir" and path.startswith("/") and not inside:
                replace[path] = str(work / key)
        for old in sorted(replace, key=len, reverse=True):
            text = re.sub(re.escape(old) + r"(?=[/\s'\"}\],]|$)", replace[old], text, flags=re.M)
        file = work / "airlock.yaml"
        file.write_text(text)
        out = run([self.binary, "policy", "check", str(file)], env=env, cwd=work)
        if out.returncode != 0:
            msg = (out.stderr.strip() or out.stdout.strip()).replace(str(file), label)
            return [f"airlock policy check: {line}" for line in msg.splitlines()] or ["airlock policy check failed"]
        return []


# --------------------------------------------------------------------------
# Compose, workflow, Dockerfile

def check_jsonschema(builtin: str, file: Path) -> list[str]:
    out = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", builtin, str(file)])
    if out.returncode != 0:
        text = (out.stdout + out.stderr).strip()
        return [line for line in text.splitlines() if line.strip()] or [f"check-jsonschema {builtin} failed"]
    return []


def compose_invariants(compose: dict, config: dict, base: Path) -> list[str]:
    problems = []
    services = compose.get("services") or {}
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("."):
                if not (base / src).exists():
                    problems.append(f"services.{name}: mounts {src}, which does not exist")
    gw = next((n for n, s in services.items() if "airlock.yaml" in str(s.get("volumes"))), None)
    if gw is None:
        return problems + ["no service mounts airlock.yaml"]
    svc = services[gw]
    if not any(str(v).startswith("./airlock.yaml:/etc/airlock/airlock.yaml") for v in svc.get("volumes") or []):
        problems.append(f"services.{gw}: ./airlock.yaml is not mounted at /etc/airlock/airlock.yaml")
    env = svc.get("environment") or {}
    for key, kind, value in walk_secrets(config):
        if kind == "env" and value not in env:
            problems.append(f"services.{gw}: airlock.yaml's {key} reads ${value}, which the service does not set")
    published = {str(p).rsplit(":", 1)[-1] for p in svc.get("ports") or []}
    for door, addr in (config.get("listen") or {}).items():
        if str(listen_port(addr)) not in published:
            problems.append(f"services.{gw}: listen.{door} ({addr}) is not published")
    for p in svc.get("ports") or []:
        if not str(p).startswith("127.0.0.1:"):
            problems.append(f"services.{gw}: port {p} is published beyond the host's loopback while the dev issuer is on")
    for name, s in services.items():
        if name != gw and s.get("ports"):
            problems.append(f"services.{name}: publishes ports; the databases must be reachable through airlock only")
    data = config_paths(config)
    for key, path in data.items():
        if not any(str(v).split(":")[1:2] and path.startswith(str(v).split(":")[1]) and not str(v).startswith(".")
                   for v in svc.get("volumes") or []):
            problems.append(f"services.{gw}: {key} {path} is not on a named volume (events would die with the container)")
    return problems


def workflow_invariants(wf: dict) -> list[str]:
    problems = []
    perms = wf.get("permissions") or {}
    jobs = wf.get("jobs") or {}
    for name, job in jobs.items():
        p = {**perms, **(job.get("permissions") or {})}
        if p.get("id-token") != "write":
            problems.append(f"jobs.{name}: permissions id-token is not write")
    text = yaml.safe_dump(wf)
    for needle in ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "audience=airlock",
                   "access request", "psql"):
        if needle not in text:
            problems.append(f"the workflow does not use {needle}")
    return problems


def dockerfile_invariants(text: str) -> list[str]:
    problems = []
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instr = [(l.split(None, 1)[0].upper(), (l.split(None, 1) + [""])[1].strip())
             for l in lines if l.strip() and not l.lstrip().startswith("#")]
    froms = [i for i, (op, _) in enumerate(instr) if op == "FROM"]
    if len(froms) < 2:
        problems.append("not a multi-stage build")
        return problems
    final = instr[froms[-1]:]
    base = final[0][1].split()[0]
    if not (base.startswith("gcr.io/distroless/static") or base == "scratch"):
        problems.append(f"the final stage is {base}, not distroless static or scratch")
    users = [a for op, a in final if op == "USER"]
    if not users or users[-1].split(":")[0] in ("", "0", "root"):
        problems.append("the final stage does not switch to a non-root USER")
    exposed = {p.split("/")[0] for op, a in final if op == "EXPOSE" for p in a.split()}
    for port in ("6432", "6033", "8080"):
        if port not in exposed:
            problems.append(f"port {port} is not exposed")
    entry = next((a for op, a in reversed(final) if op == "ENTRYPOINT"), "")
    cmd = next((a for op, a in reversed(final) if op == "CMD"), "")
    try:
        import json
        argv = json.loads(entry) + json.loads(cmd or "[]")
    except ValueError:
        argv = []
        problems.append("ENTRYPOINT and CMD are not in exec (JSON) form")
    if argv and (Path(argv[0]).name != "airlock" or argv[1:] != ["serve", "--config", "/etc/airlock/airlock.yaml"]):
        problems.append(f"the default command is {argv}, not airlock serve --config /etc/airlock/airlock.yaml")
    if not any(op == "VOLUME" and "/var/lib/airlock" in a for op, a in final):
        problems.append("/var/lib/airlock is not a VOLUME")
    builder = " ".join(a for op, a in instr[:froms[-1]])
    for needle in ("bookworm", "libclang-dev", "+crt-static", "x86_64-unknown-linux-gnu", "--bin airlock"):
        if needle not in builder:
            problems.append(f"the builder stage lacks {needle}")
    return problems


# --------------------------------------------------------------------------
# Observability: the Grafana dashboard, the alerting rules, their tests

OBS = DEPLOY / "observability"
OBS_DOC = ROOT / "docs" / "observability.md"

# The metrics airlock exports (docs/observability.md), by type. Dashboards
# and alerts may use these and nothing else (a histogram's _bucket, _sum
# and _count series included), with these labels (and the target's job and
# instance).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "airlock_sessions_total": ("counter", ("door",)),
    "airlock_sessions_active": ("gauge", ("door",)),
    "airlock_statements_total": ("counter", ("door", "decision", "rule")),
    "airlock_auth_failures_total": ("counter", ("reason",)),
    "airlock_limit_refusals_total": ("counter", ("door", "limit")),
    "airlock_planted_instructions_total": ("counter", ("action",)),
    "airlock_upstream_login_seconds": ("histogram", ()),
    "airlock_approval_wait_seconds": ("histogram", ("outcome",)),
    "airlock_journal_append_seconds": ("histogram", ()),
    "airlock_journal_append_failures_total": ("counter", ()),
    "airlock_journal_bytes": ("gauge", ()),
    "airlock_audit_shipped_events_total": ("counter", ()),
    "airlock_ship_last_success_timestamp_seconds": ("gauge", ()),
    "airlock_audit_tamper_alarms_total": ("counter", ()),
    "airlock_webhook_deliveries_total": ("counter", ("event", "result")),
    "airlock_webhook_dropped_total": ("counter", ()),
    "airlock_bytes_total": ("counter", ("direction",)),
}
TARGET_LABELS = {"job", "instance"}

# Panel title -> what its queries must contain (compared without whitespace).
DASHBOARD_PANELS = {
    "Active sessions by door": ["airlock_sessions_active", "by (door)"],
    "Session rate by door": ["rate(airlock_sessions_total", "by (door)"],
    "Statements per second by decision": ["rate(airlock_statements_total", "by (decision)"],
    "Top deny / approve rules": ["topk(", "rate(airlock_statements_total", "rule)", 'decision=~"deny|approve"'],
    "Auth failures by reason": ["rate(airlock_auth_failures_total", "by (reason)"],
    "Upstream login latency": ["histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,",
                               "airlock_upstream_login_seconds_bucket"],
    "Approval wait": ["histogram_quantile(0.5,", "histogram_quantile(0.95,", "airlock_approval_wait_seconds_bucket"],
    "Approval outcomes": ["airlock_approval_wait_seconds_count", "by (outcome)"],
    "Journal append latency p99": ["histogram_quantile(0.99,", "airlock_journal_append_seconds_bucket"],
    "Journal append failures": ["airlock_journal_append_failures_total"],
    "Journal bytes on disk": ["airlock_journal_bytes"],
    "Ship lag": ["time() - ", "airlock_ship_last_success_timestamp_seconds"],
    "Tamper alarms": ["airlock_audit_tamper_alarms_total"],
    "Webhook drops and failures": ["airlock_webhook_dropped_total", "airlock_webhook_deliveries_total"],
}
# Grafana's own variables; a query may also use the dashboard's.
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}

ALERTS = {"AirlockDown", "AirlockShipLagHigh", "AirlockJournalNotWritable", "AirlockAuthFailureSpike",
          "AirlockTamperAlarm", "AirlockJournalGrowing", "AirlockWebhookDrops"}

METRIC_TOKEN = re.compile(r"(?<![A-Za-z0-9_:])airlock_[a-z_]+")
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])(airlock_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def promtool_binary() -> str | None:
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


def metric_base(token: str) -> str | None:
    """The metric a series name belongs to, or None if it is not airlock's."""
    if token in METRICS:
        return token
    for suffix in ("_bucket", "_sum", "_count"):
        base = token.removesuffix(suffix)
        if token.endswith(suffix) and METRICS.get(base, ("",))[0] == "histogram":
            return base
    return None


def promql_problems(where: str, expr: str) -> list[str]:
    """Loosely: every airlock_* token is a known metric (or a histogram's
    series), and every label matcher on one names a label it has."""
    problems = []
    for token in sorted(set(METRIC_TOKEN.findall(expr))):
        if metric_base(token) is None:
            problems.append(f"{where}: {token} is not one of airlock's metrics")
    for name, matchers in SELECTOR.findall(expr):
        base = metric_base(name)
        if base is None:
            continue
        allowed = set(METRICS[base][1]) | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        for label in MATCHER.findall(matchers):
            if label not in allowed:
                problems.append(f"{where}: {name} has no label {label!r}")
    return problems


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def dashboard_queries(dash: dict) -> list[tuple[str, str]]:
    """(panel title and refId, expr) of every query of the dashboard."""
    out = []
    panels = list(dash.get("panels") or [])
    for p in list(panels):
        panels.extend(p.get("panels") or [])  # a collapsed row's
    for p in panels:
        for t in p.get("targets") or []:
            if "expr" in t:
                out.append((f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    return out


def dashboard_invariants(dash: dict) -> list[str]:
    problems = []
    if dash.get("schemaVersion") != 39:
        problems.append(f"schemaVersion is {dash.get('schemaVersion')!r}, not 39")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list") or []}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource for Prometheus")
    door = variables.get("door")
    door_query = (door or {}).get("query")
    door_query = door_query.get("query") if isinstance(door_query, dict) else door_query
    want = squash("label_values(airlock_sessions_active, door)")
    if not door or squash(str(door_query)) != want or squash(str(door.get("definition", want))) != want:
        problems.append("no `door` variable from label_values(airlock_sessions_active, door)")
    elif (door.get("datasource") or {}).get("uid") != "${datasource}":
        problems.append("the `door` variable does not query ${datasource}")

    panels = list(dash.get("panels") or [])
    for p in list(panels):
        panels.extend(p.get("panels") or [])
    ids = [p.get("id") for p in panels]
    if len(set(ids)) != len(ids) or None in ids:
        problems.append(f"panel ids are missing or repeated: {ids}")
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        title = p.get("title")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            problems.append(f"panel {title!r}: gridPos {g} is not within the 24 columns")
            continue
        if p.get("type") != "row":
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        problems.append(f"panel {title!r} overlaps {cells[(x, y)]!r}")
                        break
                    cells[(x, y)] = title
                else:
                    continue
                break
            if not p.get("targets"):
                problems.append(f"panel {title!r} has no queries")
            for t in [p] + list(p.get("targets") or []):
                if (t.get("datasource") or {}).get("uid") != "${datasource}":
                    problems.append(f"panel {title!r}: a datasource other than ${{datasource}}")
                    break

    by_title = {p.get("title"): p for p in panels}
    for title, needles in DASHBOARD_PANELS.items():
        p = by_title.get(title)
        if p is None:
            problems.append(f"no panel {title!r}")
            continue
        exprs = squash(" ".join(t.get("expr", "") for t in p.get("targets") or []))
        for needle in needles:
            if squash(needle) not in exprs:
                problems.append(f"panel {title!r}: its queries lack {needle}")
    for where, expr in dashboard_queries(dash):
        for var in re.findall(r"\$\{?(\w+)", expr):
            if var not in variables and var not in GRAFANA_VARIABLES:
                problems.append(f"{where}: ${var} is not a variable of the dashboard")
    return problems


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def alert_rules(groups: list[dict]) -> list[dict]:
    return [r for g in groups or [] for r in g.get("rules") or [] if "alert" in r]


def alerts_invariants(groups: list[dict], tests: dict, doc: str) -> list[str]:
    problems = []
    rules = alert_rules(groups)
    names = {r["alert"] for r in rules}
    for missing in sorted(ALERTS - names):
        problems.append(f"no alert {missing}")
    anchors = heading_anchors(doc)
    for r in rules:
        who = f"alert {r['alert']}"
        if (r.get("labels") or {}).get("severity") not in ("warning", "critical"):
            problems.append(f"{who}: severity is not warning or critical")
        notes = r.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            if not notes.get(key):
                problems.append(f"{who}: no {key} annotation")
        runbook = str(notes.get("runbook_url", ""))
        page, _, anchor = runbook.partition("#")
        if runbook and (page != "docs/observability.md" or anchor not in anchors):
            problems.append(f"{who}: runbook_url {runbook} is not a heading of docs/observability.md")
        problems += promql_problems(who, str(r.get("expr", "")))
    ship = {(r.get("labels") or {}).get("severity") for r in rules if r["alert"] == "AirlockShipLagHigh"}
    if ship != {"warning", "critical"}:
        problems.append("AirlockShipLagHigh is not there as both warning and critical")
    # The unit tests: every alert fires in some test case.
    fired = {case.get("alertname") for t in (tests.get("tests") or [])
             for case in t.get("alert_rule_test") or [] if case.get("exp_alerts")}
    silent = {case.get("alertname") for t in (tests.get("tests") or [])
              for case in t.get("alert_rule_test") or [] if not case.get("exp_alerts")}
    for name in sorted(names - fired):
        problems.append(f"alerts_test.yaml: no test case where {name} fires")
    for name in sorted(names - silent):
        problems.append(f"alerts_test.yaml: no test case where {name} stays silent")
    if tests.get("rule_files") != ["alerts.yaml"]:
        problems.append("alerts_test.yaml does not test alerts.yaml")
    return list(dict.fromkeys(problems))


def docs_invariants(doc: str) -> list[str]:
    problems = []
    rows = {m for m in re.findall(r"^\|\s*`(airlock_[a-z_]+)`", doc, flags=re.M)}
    for name in METRICS:
        if name not in rows:
            problems.append(f"docs/observability.md: no table row for {name}")
    for name in sorted(rows - set(METRICS)):
        problems.append(f"docs/observability.md: a row for {name}, which deploy/check.py's METRICS lacks")
    anchors = heading_anchors(doc)
    for name in sorted(ALERTS):
        if name.lower() not in anchors:
            problems.append(f"docs/observability.md: no runbook heading for {name}")
    return problems


def prometheusrule_invariants(rule: dict, groups: list[dict]) -> list[str]:
    problems = []
    if rule.get("apiVersion") != "monitoring.coreos.com/v1" or rule.get("kind") != "PrometheusRule":
        problems.append(f"it is {rule.get('apiVersion')} {rule.get('kind')}, not monitoring.coreos.com/v1 PrometheusRule")
    if not (rule.get("metadata") or {}).get("name"):
        problems.append("it has no metadata.name")
    theirs = (rule.get("spec") or {}).get("groups")
    if groups is None:
        problems.append("alerts.yaml could not be read, so there is nothing to compare with")
    elif theirs != groups:
        mine = {(r.get("alert"), (r.get("labels") or {}).get("severity")): r for r in alert_rules(groups)}
        other = {(r.get("alert"), (r.get("labels") or {}).get("severity")): r for r in alert_rules(theirs or [])}
        differ = sorted({k for k in mine.keys() | other.keys() if mine.get(k) != other.get(k)}, key=str)
        problems.append("spec.groups differs from alerts.yaml's groups"
                        + (f" (in {', '.join(f'{a} {s}' for a, s in differ)})" if differ else "")
                        + "; run python3 deploy/observability/prometheusrule.py")
    return problems


def promtool_run(promtool: str, args: list[str], cwd: Path) -> list[str]:
    out = run([promtool, *args], cwd=cwd)
    if out.returncode != 0:
        text = (out.stdout + out.stderr).strip()
        lines = [line.rstrip() for line in text.splitlines()
                 if line.strip() and not re.match(r"\s*(Checking |Unit Testing: |FAILED:|SUCCESS)", line)]
        # One problem, its lines as promtool printed them (a line repeated
        # at once, as for each test group of a file that does not load, once).
        lines = [line for i, line in enumerate(lines) if i == 0 or lines[i - 1] != line]
        return ["\n        ".join([""] + lines)] if lines else [f"promtool {' '.join(args)} failed"]
    return []


def dashboard_as_rules(dash: dict) -> str:
    """The dashboard's queries as recording rules, Grafana's variables
    given values, so that promtool parses them."""
    values = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "door": ".*"}
    rules = []
    for i, (where, expr) in enumerate(dashboard_queries(dash)):
        for var, value in values.items():
            expr = expr.replace("${" + var + "}", value).replace("$" + var, value)
        rules.append({"record": f"airlock:dashboard_query_{i}", "expr": expr})
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False)


def observability_checks(r: Report, tmp: Path) -> None:
    import json

    r.section("Observability (deploy/observability)")
    dash_file = OBS / "grafana-dashboard.json"
    dash = None
    try:
        dash = json.loads(dash_file.read_text())
        r.check("grafana-dashboard.json: schemaVersion 39, ${datasource} and door variables, the expected panels",
                dashboard_invariants(dash))
        r.check("grafana-dashboard.json: its queries use airlock's metrics and their labels only",
                [p for where, expr in dashboard_queries(dash) for p in promql_problems(where, expr)])
    except (OSError, ValueError) as e:
        r.fail("grafana-dashboard.json", f"not valid JSON: {e}")

    doc = OBS_DOC.read_text() if OBS_DOC.exists() else ""
    r.check("docs/observability.md: a table row per metric, a runbook section per alert",
            docs_invariants(doc) if doc else ["docs/observability.md is missing"])
    groups = None
    try:
        groups = yaml.safe_load((OBS / "alerts.yaml").read_text()).get("groups")
        tests = yaml.safe_load((OBS / "alerts_test.yaml").read_text()) or {}
        r.check("alerts.yaml: the expected alerts with severity, annotations, a runbook; airlock's metrics only; "
                "tested firing and silent",
                alerts_invariants(groups, tests, doc))
    except (OSError, yaml.YAMLError, AttributeError) as e:
        r.fail("alerts.yaml", f"cannot be read: {e}")
    try:
        rule = yaml.safe_load((OBS / "prometheusrule.yaml").read_text()) or {}
        r.check("prometheusrule.yaml: a PrometheusRule carrying the same rules as alerts.yaml",
                prometheusrule_invariants(rule, groups))
    except (OSError, yaml.YAMLError) as e:
        r.fail("prometheusrule.yaml", f"cannot be read: {e}")

    promtool = promtool_binary()
    if promtool is None:
        for what in ("promtool check rules alerts.yaml", "promtool test rules alerts_test.yaml",
                     "promtool: the dashboard's queries parse"):
            r.skip(what, "promtool is not on PATH (set PROMTOOL=/path/to/promtool; Debian: apt-get install prometheus)")
        return
    r.check("promtool check rules alerts.yaml", promtool_run(promtool, ["check", "rules", "alerts.yaml"], OBS))
    r.check("promtool test rules alerts_test.yaml: each alert fires on a failing series, not on a healthy one",
            promtool_run(promtool, ["test", "rules", "alerts_test.yaml"], OBS))
    if dash is not None:
        rules = tmp / "dashboard-rules.yaml"
        rules.write_text(dashboard_as_rules(dash))
        r.check("promtool: the dashboard's queries parse (as recording rules)",
                [p.replace(str(rules), "dashboard queries")
                 for p in promtool_run(promtool, ["check", "rules", str(rules)], tmp)])


# --------------------------------------------------------------------------

def main() -> int:
    r = Report()
    binary = os.environ.get("AIRLOCK")
    tmp = Path(tempfile.mkdtemp(prefix="airlock-deploy-check-"))
    policy = None
    if binary:
        if not os.access(binary, os.X_OK):
            r.fail("AIRLOCK", f"{binary} is not an executable")
        else:
            policy = PolicyChecker(binary, tmp)
    try:
        configs: dict[str, dict] = {}
        config_texts: dict[str, str] = {}

        r.section(f"Kubernetes (kustomize; schemas of Kubernetes {K8S_VERSION}, strict)")
        rendered: dict[str, list[dict]] = {}
        for layout in GATEWAY_LAYOUTS + [AGENT]:
            try:
                rendered[layout] = load_all(kustomize(K8S / layout))
                r.ok(f"{layout}: renders ({len(rendered[layout])} objects)")
            except (RuntimeError, yaml.YAMLError) as e:
                r.fail(layout, str(e))
        for layout, objects in rendered.items():
            r.check(f"{layout}: every object matches its schema", validate_schemas(objects))
            r.check(f"{layout}: every container non-root, read-only root, no escalation, no capabilities, seccomp",
                    container_security(objects))
            if layout in GATEWAY_LAYOUTS:
                problems, config = gateway_invariants(objects, layout)
                r.check(f"{layout}: gateway probes, StatefulSet journal volume, Services, JWKS token, PDB, NetworkPolicy",
                        problems)
                if config is not None:
                    configs[layout] = config
                    cm = next(o for o in objects if o["kind"] == "ConfigMap" and "airlock.yaml" in (o.get("data") or {}))
                    config_texts[f"{layout} ConfigMap {cm['metadata']['name']}"] = cm["data"]["airlock.yaml"]
        if AGENT in rendered:
            r.check(f"{AGENT}: projected token (audience airlock) as PGPASSWORD, matched by an access rule",
                    agent_invariants(rendered[AGENT], configs))

        r.section("Helm chart (deploy/helm/airlock)")
        chart = DEPLOY / "helm" / "airlock"
        values = yaml.safe_load((chart / "values.yaml").read_text())
        base_config = yaml.safe_load((K8S / "base" / "airlock.yaml").read_text())
        r.check("values.yaml config equals deploy/kubernetes/base/airlock.yaml",
                [] if values.get("config") == base_config else ["they differ; keep them the same"])
        helm = helm_binary()
        if helm is None:
            r.skip("helm lint / helm template", "helm is not on PATH (set HELM=/path/to/helm)")
        else:
            out = run([helm, "lint", str(chart)])
            r.check("helm lint", [] if out.returncode == 0 else [out.stdout.strip() + out.stderr.strip()])
            out = run([helm, "template", "airlock", str(chart), "--namespace", "airlock"])
            if out.returncode != 0:
                r.fail("helm template", out.stderr.strip())
            else:
                objects = load_all(out.stdout)
                r.ok(f"helm template renders ({len(objects)} objects)")
                r.check("helm: every object matches its schema", validate_schemas(objects))
                r.check("helm: container security", container_security(objects))
                problems, config = gateway_invariants(objects, "helm")
                r.check("helm: gateway probes, StatefulSet journal volume, Services, JWKS token, PDB, NetworkPolicy",
                        problems)
                if config is not None:
                    config_texts["helm ConfigMap airlock.yaml"] = yaml.safe_dump(config, sort_keys=False)
            out = run([helm, "template", "airlock", str(chart), "--set", "replicas=2"])
            r.check("helm: replicas=2 on the SQLite store fails to render",
                    [] if out.returncode != 0 and "PostgreSQL store" in out.stderr
                    else ["it rendered (or failed for another reason): " + out.stderr.strip()])
            out = run([helm, "template", "airlock", str(chart), "--set", "replicas=2",
                       "--set", "config.store.url=postgres://airlock@store.example/airlock"])
            r.check("helm: replicas=2 on a PostgreSQL store renders",
                    [] if out.returncode == 0 else [out.stderr.strip()])
            out = run([helm, "template", "airlock", str(chart), "--set", "serviceMonitor.enabled=true"])
            sm = [o for o in load_all(out.stdout) if o.get("kind") == "ServiceMonitor"] if out.returncode == 0 else []
            r.check("helm: serviceMonitor.enabled renders a ServiceMonitor for /metrics",
                    [] if sm and sm[0]["spec"]["endpoints"][0]["path"] == "/metrics" else [out.stderr.strip() or "none rendered"])

        r.section("Docker Compose (deploy/compose)")
        compose_file = DEPLOY / "compose" / "compose.yaml"
        r.check("compose.yaml matches the Compose specification (check-jsonschema vendor.compose-spec)",
                check_jsonschema("vendor.compose-spec", compose_file))
        compose_config_text = (DEPLOY / "compose" / "airlock.yaml").read_text()
        compose_config = yaml.safe_load(compose_config_text)
        r.check("compose.yaml: mounts, secrets' variables, published ports, data on a volume",
                compose_invariants(yaml.safe_load(compose_file.read_text()), compose_config, compose_file.parent))
        config_texts = {"deploy/compose/airlock.yaml": compose_config_text, **config_texts}
        config_texts["deploy/helm/airlock/values.yaml config"] = yaml.safe_dump(values.get("config"), sort_keys=False)

        r.section("GitHub Actions example (deploy/github-actions/migrate.yml)")
        wf_file = DEPLOY / "github-actions" / "migrate.yml"
        r.check("migrate.yml matches the workflow schema (check-jsonschema vendor.github-workflows)",
                check_jsonschema("vendor.github-workflows", wf_file))
        r.check("migrate.yml: id-token write, OIDC token for audience airlock, access request, psql",
                workflow_invariants(yaml.safe_load(wf_file.read_text())))

        r.section("Dockerfile")
        r.check("Dockerfile: multi-stage static build, distroless non-root, ports, entrypoint, volume",
                dockerfile_invariants((ROOT / "Dockerfile").read_text()))

        observability_checks(r, tmp)

        r.section("airlock policy check")
        if policy is None:
            r.skip("airlock policy check", "AIRLOCK is not set to an airlock binary")
        else:
            for label, text in config_texts.items():
                try:
                    r.check(f"{label}: airlock policy check", policy.check(label, text))
                except RuntimeError as e:
                    r.fail(label, str(e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    if r.problems:
        print(f"{len(r.problems)} problem(s):")
        for p in r.problems:
            print(f"  - {p}")
    print(f"check: {r.passed} passed, {r.failed} failed, {r.skipped} skipped")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
