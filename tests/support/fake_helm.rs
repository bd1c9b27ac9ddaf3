//! The one stand-in of the test suite: a `helm` executable for the cluster
//! side (no Kubernetes API server can run here). It keeps releases in files
//! and implements `list`, `get values`, `history`, `status`, `upgrade` and
//! `rollback`; everything else (`template`, `pull`, `version`, `show`,
//! `dependency`, ...) is delegated to the real helm, so rendering and chart
//! download are real, and `version` tells v3 or v4 truthfully. `upgrade`
//! first runs the real `helm template` with the same arguments (minus
//! nothing: template accepts every flag bundler passes to upgrade, in the
//! dialect of its own version), so a wrong flag, chart, version or value
//! fails as it would with a cluster. Every argv is logged, one line per
//! call, arguments separated by the unit separator (0x1f).
use std::path::{Path, PathBuf};

pub struct FakeHelm {
    pub dir: tempfile::TempDir,
    /// The executable to give bundler (`--helm` / `BUNDLER_HELM`).
    pub path: PathBuf,
    pub real: PathBuf,
}

const SCRIPT: &str = r##"#!/usr/bin/env bash
# fake helm: cluster side in files, the rest delegated to the real helm
set -u
: "${FAKE_HELM_STATE:?}" "${FAKE_HELM_REAL:?}"
log="$FAKE_HELM_STATE/argv.log"
( IFS=$'\x1f'; printf '%s\n' "$*" ) >> "$log"

cmd="${1:-}"
case "$cmd" in
  list|get|history|status|upgrade|rollback) ;;
  *) exec "$FAKE_HELM_REAL" "$@" ;;
esac
shift

ns="default"; all=0; out="table"; pos=()
orig=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--namespace) ns="$2"; shift 2 ;;
    --namespace=*) ns="${1#*=}"; shift ;;
    -A|--all-namespaces) all=1; shift ;;
    -o|--output) out="$2"; shift 2 ;;
    --output=*) out="${1#*=}"; shift ;;
    --filter|--timeout|--version|--repo|--username|--password|--ca-file|-f|--values|--set|--set-string|--max|--revision) shift 2 ;;
    --*=*) shift ;;
    -*) shift ;;
    *) pos+=("$1"); shift ;;
  esac
done

rel_dir() { echo "$FAKE_HELM_STATE/releases/$1/$2"; }
major=$("$FAKE_HELM_REAL" version --short | sed -E 's/^v([0-9]+).*/\1/')

wait_ok() {
  # v3: --wait is a boolean; v4: --wait takes a strategy (--wait=watcher)
  for a in "${orig[@]}"; do
    case "$a" in
      --wait=*) [ "$major" -ge 4 ] || { echo "Error: unknown flag: $a" >&2; exit 1; } ;;
      --atomic) [ "$major" -lt 4 ] || { echo "Error: unknown flag: --atomic" >&2; exit 1; } ;;
      --rollback-on-failure) [ "$major" -ge 4 ] || { echo "Error: unknown flag: $a" >&2; exit 1; } ;;
    esac
  done
}

case "$cmd" in
  list)
    first=1; printf '['
    for d in "$FAKE_HELM_STATE"/releases/*/*; do
      [ -d "$d" ] || continue
      n=$(basename "$d"); s=$(basename "$(dirname "$d")")
      if [ $all -eq 0 ] && [ "$s" != "$ns" ]; then continue; fi
      r=$(cat "$d/current")
      [ $first -eq 1 ] || printf ','
      first=0
      printf '{"name":"%s","namespace":"%s","revision":"%s","updated":"2024-01-01 00:00:00.000000000 +0000 UTC","status":"%s","chart":"%s","app_version":"%s"}' \
        "$n" "$s" "$r" "$(cat "$d/status-$r")" "$(cat "$d/chart-$r")" "$(cat "$d/app-$r")"
    done
    printf ']\n' ;;
  status)
    d=$(rel_dir "$ns" "${pos[0]}")
    [ -d "$d" ] || { echo "Error: release: not found" >&2; exit 1; }
    r=$(cat "$d/current"); echo "NAME: ${pos[0]}"; echo "NAMESPACE: $ns"; echo "STATUS: $(cat "$d/status-$r")"; echo "REVISION: $r" ;;
  get)
    [ "${pos[0]:-}" = "values" ] || { echo "Error: fake helm supports only get values" >&2; exit 1; }
    d=$(rel_dir "$ns" "${pos[1]}")
    [ -d "$d" ] || { echo "Error: release: not found" >&2; exit 1; }
    cat "$d/values-$(cat "$d/current").yaml" ;;
  history)
    d=$(rel_dir "$ns" "${pos[0]}")
    [ -d "$d" ] || { echo "Error: release: not found" >&2; exit 1; }
    cur=$(cat "$d/current"); printf '['
    for ((i=1;i<=cur;i++)); do
      [ $i -eq 1 ] || printf ','
      printf '{"revision":%s,"updated":"2024-01-01T00:00:00Z","status":"%s","chart":"%s","app_version":"%s","description":"rev %s"}' \
        "$i" "$(cat "$d/status-$i")" "$(cat "$d/chart-$i")" "$(cat "$d/app-$i")" "$i"
    done
    printf ']\n' ;;
  upgrade)
    wait_ok
    name="${pos[0]}"; d=$(rel_dir "$ns" "$name")
    [ -d "$d" ] || { echo "Error: UPGRADE FAILED: \"$name\" has no deployed releases" >&2; exit 1; }
    targs=()
    for a in "${orig[@]}"; do targs+=("$a"); done
    rendered=$("$FAKE_HELM_REAL" template "${targs[@]}" 2>"$FAKE_HELM_STATE/template.err") || { echo "Error: UPGRADE FAILED: $(cat "$FAKE_HELM_STATE/template.err")" >&2; exit 1; }
    chartname=$(printf '%s\n' "$rendered" | sed -n 's/^ *helm.sh\/chart: *//p' | head -n1)
    cur=$(cat "$d/current"); new=$((cur+1))
    # user-supplied values of the new revision: the -f files in order, then the --set list
    : > "$d/values-$new.yaml"
    set -- "${orig[@]}"
    sets=""
    while [ $# -gt 0 ]; do
      case "$1" in
        -f|--values) cat "$2" >> "$d/values-$new.yaml"; shift 2 ;;
        --set) sets="$sets$2;"; shift 2 ;;
        *) shift ;;
      esac
    done
    echo "# --set: $sets" >> "$d/values-$new.yaml"
    echo "${chartname:-unknown-0}" > "$d/chart-$new"; cp "$d/app-$cur" "$d/app-$new"
    echo "$new" > "$d/current"
    if [ -e "$FAKE_HELM_STATE/fail-upgrade" ]; then
      echo failed > "$d/status-$new"
      echo "Error: UPGRADE FAILED: resource Deployment/$ns/$name not ready. status: InProgress, message: context deadline exceeded" >&2
      exit 1
    fi
    echo deployed > "$d/status-$new"; echo superseded > "$d/status-$cur"
    echo "Release \"$name\" has been upgraded. Happy Helming!"; echo "REVISION: $new" ;;
  rollback)
    wait_ok
    name="${pos[0]}"; to="${pos[1]:-}"; d=$(rel_dir "$ns" "$name")
    [ -d "$d" ] || { echo "Error: release: not found" >&2; exit 1; }
    cur=$(cat "$d/current"); [ -n "$to" ] || to=$((cur-1))
    [ -e "$d/chart-$to" ] || { echo "Error: release has no $to version" >&2; exit 1; }
    new=$((cur+1))
    cp "$d/values-$to.yaml" "$d/values-$new.yaml"; cp "$d/chart-$to" "$d/chart-$new"; cp "$d/app-$to" "$d/app-$new"
    echo deployed > "$d/status-$new"; echo superseded > "$d/status-$cur"; echo "$new" > "$d/current"
    echo "Rollback was a success! Happy Helming!" ;;
esac
"##;

impl FakeHelm {
    /// A fake helm delegating to `real` (e.g. `/usr/local/bin/helm3`).
    pub fn new(real: &Path) -> FakeHelm {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helm");
        std::fs::write(&path, SCRIPT).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("state/releases")).unwrap();
        FakeHelm {
            dir,
            path,
            real: real.to_path_buf(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Environment the fake needs (set on the bundler process).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("FAKE_HELM_STATE".into(), self.state().display().to_string()),
            ("FAKE_HELM_REAL".into(), self.real.display().to_string()),
            ("BUNDLER_HELM".into(), self.path.display().to_string()),
        ]
    }

    fn rel(&self, ns: &str, name: &str) -> PathBuf {
        self.state().join("releases").join(ns).join(name)
    }

    /// A deployed release at `revisions` revisions, the last with `values`.
    pub fn add_release(&self, name: &str, ns: &str, chart: &str, revisions: u32, values: &str) {
        let d = self.rel(ns, name);
        std::fs::create_dir_all(&d).unwrap();
        for r in 1..=revisions {
            let w = |f: &str, v: &str| std::fs::write(d.join(format!("{f}-{r}")), v).unwrap();
            w("chart", &format!("{chart}\n"));
            w("app", "1.0\n");
            w(
                "status",
                if r == revisions {
                    "deployed\n"
                } else {
                    "superseded\n"
                },
            );
            std::fs::write(
                d.join(format!("values-{r}.yaml")),
                if r == revisions {
                    values.to_string()
                } else {
                    format!("rev: {r}\n")
                },
            )
            .unwrap();
        }
        std::fs::write(d.join("current"), format!("{revisions}\n")).unwrap();
    }

    pub fn fail_upgrades(&self, fail: bool) {
        let f = self.state().join("fail-upgrade");
        if fail {
            std::fs::write(f, "").unwrap();
        } else {
            let _ = std::fs::remove_file(f);
        }
    }

    pub fn revision(&self, name: &str, ns: &str) -> u32 {
        std::fs::read_to_string(self.rel(ns, name).join("current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn values(&self, name: &str, ns: &str, rev: u32) -> String {
        std::fs::read_to_string(self.rel(ns, name).join(format!("values-{rev}.yaml"))).unwrap()
    }

    pub fn chart(&self, name: &str, ns: &str, rev: u32) -> String {
        std::fs::read_to_string(self.rel(ns, name).join(format!("chart-{rev}")))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn status(&self, name: &str, ns: &str, rev: u32) -> String {
        std::fs::read_to_string(self.rel(ns, name).join(format!("status-{rev}")))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Every argv the fake saw, in order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.state().join("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('\x1f').map(str::to_string).collect())
            .collect()
    }

    /// The calls whose first argument is `verb`.
    pub fn calls_of(&self, verb: &str) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| c.first().map(String::as_str) == Some(verb))
            .collect()
    }
}
