#!/usr/bin/env bash
# Static checks of the deployment files under deploy/ (deploy/README.md, "Scaling out"):
#   1. promtool check config deploy/prometheus/prometheus.yml (and the rule file it names); Debian's
#      promtool has no Kubernetes service discovery, so its kubernetes_sd_configs blocks are checked
#      apart (below) and replaced by static targets for promtool;
#   2. promtool check rules deploy/prometheus/inetinfo-rules.yml;
#   3. promtool test rules deploy/prometheus/inetinfo-rules.test.yml (each alert fires where it should
#      and stays silent where it should not);
#   4. every manifest in deploy/kubernetes/*.yaml validated offline and strictly (an unknown or
#      misspelled field fails) against the Kubernetes API schema of each version in K8S_VERSIONS
#      (default "1.30.0 1.37.0": the oldest meant to be supported and the newest bundled) by
#      kubernetes-validate (PyPI; it bundles the schemas, no cluster needed); the PodMonitor, a custom
#      resource the Kubernetes schema does not know, against deploy/kubernetes/schema/podmonitor.schema.json;
#      an unknown kind or apiVersion fails too (kubernetes-validate's command line only warns);
#   5. the manifests agree with each other and with the inetinfo.toml in the ConfigMap (selectors,
#      named ports, probe paths, admin port, state directory, grace period, security context);
#   6. the checks can fail: each is run once more on a deliberately broken copy in a temporary
#      directory (a misspelled nested field, a wrong type, a misspelled kind, a misspelled PodMonitor
#      field, a dangling targetPort, admin.allow-remote off, misspelled Prometheus config fields, a
#      broken rule expression, a changed alert threshold) and must fail there, for that reason.
#
#   scripts/check-deploy.sh        # as root (installs what is missing); CI=true, no stdin needed
#
# Installs, when missing: Debian's prometheus package (for promtool; 2.42 on Debian 12), without
# recommends and with a policy-rc.d that forbids starting services during the install, so no
# Prometheus server is left running (one the install started anyway is stopped by pid; one that ran
# before is left alone); kubernetes-validate into a virtualenv in $CHECK_DEPLOY_VENV
# (/var/cache/inetinfo-check-deploy/venv). No network but apt and pip. Idempotent: a second run
# installs nothing.
#
# Prints a PASS line per check (FAIL with details); exit status 0 when all pass.
set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1

kv_version=1.37.0
read -r -a k8s_versions <<<"${K8S_VERSIONS:-1.30.0 1.37.0}"
venv=${CHECK_DEPLOY_VENV:-/var/cache/inetinfo-check-deploy/venv}
prom_dir=deploy/prometheus
kube_dir=deploy/kubernetes
podmonitor_schema=$kube_dir/schema/podmonitor.schema.json

failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
indent() { sed 's/^/    | /'; }

work=$(mktemp -d /tmp/check-deploy.XXXXXX)
policy_rc=/usr/sbin/policy-rc.d
created_policy_rc=0
cleanup() {
    [ "$created_policy_rc" = 1 ] && rm -f "$policy_rc"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools -------------------------------------------------------------------------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# Prometheus servers by pid (prometheus-node-exporter's process name is cut to 15 characters).
servers() { { pgrep -x prometheus; pgrep -x prometheus-node; } 2>/dev/null | sort; }

servers_at_start=$(servers)
if ! command -v promtool >/dev/null; then
    if [ ! -e "$policy_rc" ]; then
        # invoke-rc.d and deb-systemd-invoke ask this; 101 = "action forbidden": nothing starts.
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy_rc" >/dev/null && as_root chmod 755 "$policy_rc"
        created_policy_rc=1
    fi
    { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends prometheus; } \
        >"$work/apt.log" 2>&1 || { echo "FAIL: apt-get install prometheus"; indent <"$work/apt.log"; exit 1; }
    if [ "$created_policy_rc" = 1 ]; then as_root rm -f "$policy_rc"; created_policy_rc=0; fi
    # Stop only servers the install started (by pid), none that ran before.
    for pid in $(comm -13 <(echo "$servers_at_start") <(servers)); do
        echo "note: stopping $(cat /proc/"$pid"/comm 2>/dev/null) (pid $pid) started by the install" >&2
        as_root kill "$pid" 2>/dev/null
    done
    command -v promtool >/dev/null || { echo "FAIL: promtool not found after installing prometheus"; exit 1; }
fi

if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("kubernetes-validate") != sys.argv[1])' \
        "$kv_version" 2>/dev/null; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >"$work/venv.log" 2>&1; then
        # Debian's own python3 needs python3-venv for that.
        { as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv; } >>"$work/venv.log" 2>&1
        rm -rf "$venv"
        python3 -m venv "$venv" >>"$work/venv.log" 2>&1 || { echo "FAIL: python3 -m venv"; indent <"$work/venv.log"; exit 1; }
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$kv_version" \
        >"$work/pip.log" 2>&1 || { echo "FAIL: pip install kubernetes-validate==$kv_version"; indent <"$work/pip.log"; exit 1; }
fi
py=$venv/bin/python

# ---- the validator -----------------------------------------------------------------------------
cat >"$work/validate.py" <<'PYTHON'
"""validate.py [--consistency] SCHEMA_FOR_PODMONITOR K8S_VERSIONS(comma) FILE...
Strict offline validation of Kubernetes manifests; prints one line per document or problem and
exits 1 when any fails."""
import json, sys, tomllib
import jsonschema, yaml
import kubernetes_validate.utils as kv

args = sys.argv[1:]
consistency = args[0] == "--consistency"
if consistency:
    args = args[1:]
crd_schema_path, versions, files = args[0], args[1].split(","), args[2:]
with open(crd_schema_path) as f:
    crd_schemas = {("monitoring.coreos.com/v1", "PodMonitor"): json.load(f)}

failed = False
def bad(msg):
    global failed
    failed = True
    print("FAIL: " + msg)

docs = []
for path in files:
    try:
        with open(path) as f:
            loaded = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        bad(f"{path}: not YAML: {e}")
        continue
    for doc in loaded:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            bad(f"{path}: a document without apiVersion/kind")
            continue
        name = f"{path}: {doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
        docs.append((path, doc))
        key = (doc["apiVersion"], doc["kind"])
        if key in crd_schemas:
            errors = sorted(jsonschema.Draft202012Validator(crd_schemas[key]).iter_errors(doc), key=str)
            for e in errors:
                bad(f"{name}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")
            if not errors:
                print(f"PASS: {name} matches {crd_schema_path} (strict)")
            continue
        ok = True
        for v in versions:
            try:
                kv.validate(doc, v, strict=True)
            except kv.ValidationError as e:
                ok = False
                bad(f"{name}: Kubernetes {e.version}: {'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError, kv.VersionNotSupportedError) as e:
                ok = False
                bad(f"{name}: Kubernetes {v}: {getattr(e, 'message', e)}")
        if ok:
            print(f"PASS: {name} validates against the Kubernetes {' and '.join(versions)} schemas (strict)")

def check(cond, msg):
    if not cond:
        bad("consistency: " + msg)
    return cond

if consistency and not failed:
    by_kind = {}
    for _, d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    [sts] = by_kind["StatefulSet"]
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    [c] = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    def selects(sel):
        return sel and all(labels.get(k) == v for k, v in sel.items())
    check(selects(sts["spec"]["selector"]["matchLabels"]), "StatefulSet selector does not match its pod labels")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    headless = services.get(sts["spec"]["serviceName"])
    check(headless and headless["spec"].get("clusterIP") == "None", "serviceName is not a headless Service")
    for s in services.values():
        check(selects(s["spec"]["selector"]), f"Service {s['metadata']['name']} selects no inetinfo pod")
        for p in s["spec"]["ports"]:
            check(p["targetPort"] in ports, f"Service {s['metadata']['name']} targetPort {p['targetPort']} is no container port")
    front = services.get("inetinfo")
    if check(front, "no Service inetinfo"):
        check({p["port"]: p["targetPort"] for p in front["spec"]["ports"]} == {25: "smtp", 80: "http"},
              "Service inetinfo does not map 25->smtp, 80->http")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        check(selects(pdb["spec"]["selector"]["matchLabels"]), "PodDisruptionBudget selects no inetinfo pod")
    for pm in by_kind.get("PodMonitor", []):
        check(selects(pm["spec"]["selector"]["matchLabels"]), "PodMonitor selects no inetinfo pod")
        check(labels.get(pm["spec"].get("jobLabel")) == "inetinfo", "PodMonitor's jobLabel does not give job=inetinfo")
        for ep in pm["spec"]["podMetricsEndpoints"]:
            check(ep["port"] == "admin" and ep.get("path", "/metrics") == "/metrics", "PodMonitor does not scrape admin /metrics")
    ann = pod["metadata"].get("annotations", {})
    check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics"
          and ann.get("prometheus.io/port") == str(ports.get("admin")), "prometheus.io annotations do not name the admin port's /metrics")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        g = c.get(probe, {}).get("httpGet", {})
        check(g.get("path") == path and g.get("port") in ("admin", ports.get("admin")), f"{probe} is not httpGet {path} on the admin port")
    live = c["livenessProbe"]
    check(live.get("failureThreshold", 3) * live.get("periodSeconds", 10) >= 20, "livenessProbe kills a host busy for less than 20 s")
    # The configuration the pods run.
    [cm] = [m for m in by_kind.get("ConfigMap", []) if "inetinfo.toml" in m.get("data", {})]
    cfg = tomllib.loads(cm["data"]["inetinfo.toml"])
    def listen_port(section):
        host, _, port = cfg[section]["listen"].rpartition(":")
        return host, int(port)
    for section, name in (("smtp", "smtp"), ("http", "http"), ("admin", "admin")):
        host, port = listen_port(section)
        check(host == "0.0.0.0" and port == ports.get(name), f"{section}.listen {cfg[section]['listen']} is not 0.0.0.0:{ports.get(name)}")
    check(cfg["admin"].get("allow-remote") is True, "admin.allow-remote is not true (the host would exit 78)")
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    check(vols.get(mounts.get("/etc/inetinfo"), {}).get("configMap", {}).get("name") == cm["metadata"]["name"],
          "the ConfigMap is not mounted at /etc/inetinfo")
    check(c.get("args") == ["--config", "/etc/inetinfo/inetinfo.toml"], "the container does not run --config /etc/inetinfo/inetinfo.toml")
    claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]
    check(mounts.get(cfg["host"]["state-dir"]) in claims, "host.state-dir is not on a volumeClaimTemplate")
    # Grace period: preStop sleep + shutdown-timeout (default 5 s) + margin.
    sleep = int(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])[-1])
    shutdown = cfg.get("supervisor", {}).get("shutdown-timeout", 5000) / 1000
    check(pod["spec"].get("terminationGracePeriodSeconds", 30) >= sleep + shutdown + 10, "terminationGracePeriodSeconds leaves no margin over the host's stop")
    psc, csc = pod["spec"].get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") and csc.get("readOnlyRootFilesystem") and csc.get("allowPrivilegeEscalation") is False
          and csc.get("capabilities", {}).get("drop") == ["ALL"], "securityContext is not non-root, read-only, no capabilities")
    check("resources" in c and "requests" in c["resources"], "no resource requests")
    if not failed:
        print(f"PASS: {len(docs)} manifests agree with each other and with inetinfo.toml (selectors, ports, probes, state dir, grace period, security)")
sys.exit(1 if failed else 0)
PYTHON

validate() { "$py" "$work/validate.py" "$@"; }
versions_csv=$(IFS=,; echo "${k8s_versions[*]}")

# ---- 1-3: Prometheus ---------------------------------------------------------------------------
# Debian's Prometheus is built without Kubernetes service discovery (removed for its dependencies; see
# /usr/share/doc/prometheus/NEWS.Debian.gz): its promtool rejects `kubernetes_sd_configs` as an unknown
# field. So each kubernetes_sd_configs block is checked here, strictly, against the fields Prometheus
# documents for it, and replaced by a static target before promtool checks the rest of the file:
# the job's relabel_configs (actions, regexes, labels) and everything else still go through promtool.
cat >"$work/promcfg.py" <<'PYTHON'
"""promcfg.py IN OUT: check kubernetes_sd_configs blocks; write IN with them replaced by static targets."""
import sys, yaml
src, dst = sys.argv[1:]
with open(src) as f:
    cfg = yaml.safe_load(f)
known = {"role", "namespaces", "selectors", "attach_metadata", "api_server", "kubeconfig_file",
         "basic_auth", "authorization", "oauth2", "follow_redirects", "enable_http2", "tls_config",
         "proxy_url", "no_proxy", "proxy_from_environment", "proxy_connect_header"}
roles = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}
errors = []
for job in cfg.get("scrape_configs") or []:
    sds = job.pop("kubernetes_sd_configs", None)
    if sds is None:
        continue
    for sd in sds:
        for key in set(sd) - known:
            errors.append(f"job {job.get('job_name')}: kubernetes_sd_configs: unknown field {key}")
        if sd.get("role") not in roles:
            errors.append(f"job {job.get('job_name')}: kubernetes_sd_configs: role {sd.get('role')!r} is not one of {sorted(roles)}")
        for key in set(sd.get("namespaces") or {}) - {"names", "own_namespace"}:
            errors.append(f"job {job.get('job_name')}: kubernetes_sd_configs.namespaces: unknown field {key}")
    job.setdefault("static_configs", []).append({"targets": ["kubernetes-sd.invalid:9464"]})
for e in errors:
    print("FAILED: " + e)
with open(dst, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
sys.exit(1 if errors else 0)
PYTHON
# check_prom_config FILE: the rule files it names are taken from FILE's directory.
check_prom_config() {
    local dir; dir=$(cd "$(dirname "$1")" && pwd)
    rm -rf "$work/promcfg"; mkdir "$work/promcfg" && cp "$dir"/*.yml "$work/promcfg/" &&
        "$py" "$work/promcfg.py" "$1" "$work/promcfg/$(basename "$1")" &&
        promtool check config "$work/promcfg/$(basename "$1")"
}
promtool_version=$(promtool --version 2>&1 | sed -n '1s/^promtool, version \([^ ]*\).*/\1/p')
if out=$(check_prom_config "$prom_dir/prometheus.yml" 2>&1); then
    pass "promtool $promtool_version check config $prom_dir/prometheus.yml (kubernetes_sd_configs checked apart: Debian's build lacks it)"
else
    fail "promtool check config $prom_dir/prometheus.yml"; echo "$out" | indent
fi
if out=$(promtool check rules "$prom_dir/inetinfo-rules.yml" 2>&1); then
    pass "promtool check rules $prom_dir/inetinfo-rules.yml: $(echo "$out" | sed -n 's/.*SUCCESS: \([0-9]* rules found\).*/\1/p')"
else
    fail "promtool check rules $prom_dir/inetinfo-rules.yml"; echo "$out" | indent
fi
if out=$(promtool test rules "$prom_dir/inetinfo-rules.test.yml" 2>&1); then
    pass "promtool test rules $prom_dir/inetinfo-rules.test.yml"
else
    fail "promtool test rules $prom_dir/inetinfo-rules.test.yml"; echo "$out" | indent
fi

# ---- 4-5: Kubernetes ---------------------------------------------------------------------------
manifests=("$kube_dir"/*.yaml)
if out=$(validate --consistency "$podmonitor_schema" "$versions_csv" "${manifests[@]}" 2>&1); then
    echo "$out"
else
    failures=$((failures + 1)); echo "$out" | grep -v '^PASS' ; echo "FAIL: validation of $kube_dir (above)"
fi

# ---- 6: the checks fail on broken copies -------------------------------------------------------
# expect_failure DESCRIPTION FILE SED-EXPRESSION EXPECTED COMMAND...: in a copy of deploy/kubernetes and
# deploy/prometheus ($work/broken) with SED-EXPRESSION applied to FILE, COMMAND must fail with output
# matching the regex EXPECTED (so it fails for that reason, not another); the edit must change FILE.
expect_failure() {
    local what=$1 file=$2 expr=$3 expected=$4 original; shift 4
    rm -rf "$work/broken"; mkdir -p "$work/broken/schema"
    cp "$kube_dir"/*.yaml "$prom_dir"/*.yml "$work/broken/" && cp "$podmonitor_schema" "$work/broken/schema/"
    sed -i -e "$expr" "$work/broken/$file"
    original=$kube_dir/$file; [ -e "$original" ] || original=$prom_dir/$file
    if cmp -s "$work/broken/$file" "$original"; then
        fail "broken copy ($what): the edit '$expr' changed nothing in $file"; return
    fi
    if out=$(cd "$work/broken" && "$@" 2>&1); then
        fail "the check passed a broken copy ($what)"; echo "$out" | indent
    elif ! echo "$out" | grep -qE "$expected"; then
        fail "the check failed on a broken copy ($what) but not with /$expected/"; echo "$out" | indent
    else
        pass "fails on a broken copy: $what: $(echo "$out" | grep -m1 -E "$expected" | sed 's/^ *//' | cut -c1-100)"
    fi
}
v() { validate schema/podmonitor.schema.json "$versions_csv" "$@"; }
v_all() { validate --consistency schema/podmonitor.schema.json "$versions_csv" ./*.yaml; }
expect_failure "readinessProbe misspelled readinesProbe" statefulset.yaml 's/^\(\s*\)readinessProbe:/\1readinesProbe:/' \
    "Additional properties are not allowed \('readinesProbe'" v statefulset.yaml
expect_failure "runAsNonRoot: \"yes\" (a string)" statefulset.yaml '0,/runAsNonRoot: true/s//runAsNonRoot: "yes"/' \
    "runAsNonRoot: 'yes' is not of type 'boolean'" v statefulset.yaml
expect_failure "kind StatefullSet" statefulset.yaml 's/^kind: StatefulSet/kind: StatefullSet/' \
    "find schema for kind StatefullSet" v statefulset.yaml
expect_failure "PodMonitor endpoint field port misspelled portt" podmonitor.yaml 's/- port: admin/- portt: admin/' \
    "Additional properties are not allowed \('portt'" v podmonitor.yaml
expect_failure "Service targetPort smtpd (no such container port)" service.yaml 's/targetPort: smtp/targetPort: smtpd/' \
    "targetPort smtpd is no container port" v_all
expect_failure "admin.allow-remote = false" configmap.yaml 's/allow-remote = true/allow-remote = false/' \
    "admin.allow-remote is not true" v_all
expect_failure "scrape_interval misspelled" prometheus.yml 's/^  scrape_interval:/  scrape_intervall:/' \
    "field scrape_intervall not found" check_prom_config prometheus.yml
expect_failure "kubernetes_sd_configs role misspelled" prometheus.yml 's/- role: pod/- rol: pod/' \
    "unknown field rol" check_prom_config prometheus.yml
expect_failure "rule expression with a syntax error" inetinfo-rules.yml 's/inetinfo_host_degraded{job="inetinfo"} == 1/inetinfo_host_degraded{job="inetinfo"} == == 1/' \
    "parse error" promtool check rules inetinfo-rules.yml
expect_failure "restart threshold 5 changed to 50" inetinfo-rules.yml 's/\[10m\])) > 5$/[10m])) > 50/' \
    "alertname: InetinfoServiceRestarting" promtool test rules inetinfo-rules.test.yml

# No Prometheus server left running by this script.
if [ -n "$(comm -13 <(echo "$servers_at_start") <(servers))" ]; then
    fail "a Prometheus server started during this script is still running: $(servers | tr '\n' ' ')"
fi

exit $((failures > 0))
