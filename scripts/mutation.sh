#!/usr/bin/env bash
# Mutation testing of the pure analysis modules with mutmut: does every documented rule have a unit
# test that fails when the code breaks it? Each module runs on its own, in a scratch copy of this
# checkout (.mutation/<module>/, made afresh each time, where mutmut's mutants/ stay for `mutmut show`),
# against tests/unit only, with at most MUTATION_JOBS (default 2) test processes.
#
#   scripts/mutation.sh                                   the default modules
#   scripts/mutation.sh sentinel_exp/analysis/slo.py      the ones named
#
# Prints, per module, the mutants killed out of those tested and the survivors; each survivor
# either gets a test or a one-line reason why it is equivalent in scripts/mutation_survivors.md.
# Needs mutmut 3 (pip install -e '.[mutation]'); its settings are [tool.mutmut] in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  modules=(
    sentinel_exp/analysis/stats.py
    sentinel_exp/analysis/slo.py
    sentinel_exp/analysis/diagnosis.py
    sentinel_exp/analysis/comparison.py
    sentinel_exp/checks/options.py
  )
fi
command -v mutmut >/dev/null || { echo "error: mutmut is not installed: pip install -e '.[mutation]'" >&2; exit 2; }
for module in "${modules[@]}"; do
  [ -f "$module" ] || { echo "error: $module is not a file of this checkout" >&2; exit 2; }
done
root=$repo/${MUTATION_DIR:-.mutation}
summary=()
for module in "${modules[@]}"; do
  name=${module%.py}
  name=${name//\//.}
  work=$root/$name
  mkdir -p "$work"
  # A fresh copy of the checkout, uncommitted edits included, and no results of an earlier run:
  # mutmut keeps a mutant's result until the function's own code changes, so a new test would not
  # be run against the mutants it kills.
  rm -rf "$work"
  mkdir -p "$work"
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$work"
  python - "$work" "$module" <<'PY'
import json
import sys
from pathlib import Path

work, module = Path(sys.argv[1]), sys.argv[2]
path = work / "pyproject.toml"
text = path.read_text(encoding="utf-8")
assert "\n[tool.mutmut]\n" in text, "pyproject.toml has no [tool.mutmut] table"
# Everything beside the package goes into mutants/ too: tests read the docs, conf/ and the scripts.
rest = sorted(p.name + ("/" if p.is_dir() else "") for p in work.iterdir() if p.name != "sentinel_exp")
settings = f"only_mutate = {json.dumps([module])}\nalso_copy = {json.dumps(rest)}\n"
path.write_text(text.replace("\n[tool.mutmut]\n", "\n[tool.mutmut]\n" + settings), encoding="utf-8")
PY
  echo "== $module"
  (cd "$work" && mutmut run --max-children "${MUTATION_JOBS:-2}" >"$work/run.log" 2>&1) || {
    tail -30 "$work/run.log" >&2
    echo "error: mutmut failed on $module (log: $work/run.log)" >&2
    exit 1
  }
  (cd "$work" && mutmut export-cicd-stats >/dev/null && mutmut results >"$work/survivors.txt")
  line=$(python - "$work/mutants/mutmut-cicd-stats.json" "$module" <<'PY'
import json
import sys

stats = json.load(open(sys.argv[1], encoding="utf-8"))
# A timeout is a kill (the mutant looped); a mutant no unit test reaches counts against the score.
killed = stats["killed"] + stats.get("timeout", 0)
uncovered = stats.get("no_tests", 0)
total = killed + stats["survived"] + stats.get("suspicious", 0) + uncovered
score = 100.0 * killed / total if total else float("nan")
print(
    f"{sys.argv[2]}: {killed}/{total} killed ({score:.1f}%), {stats['survived']} survived, "
    f"{uncovered} reached by no unit test"
)
PY
)
  echo "$line"
  sed 's/^/    /' "$work/survivors.txt"
  summary+=("$line")
done
echo
echo "mutation score (survivors listed in $root/<module>/survivors.txt):"
printf '  %s\n' "${summary[@]}"
