# Sourced by .ci/run and scripts/test: `stage NAME COMMAND…` runs one stage of the CI run,
# prints "stage NAME: N s" when it ends (ok or not) and, when CI_STAGE_TIMES names a file,
# appends that line to it so .ci/run can print every stage's time in its summary.
stage() {
  local name=$1
  shift
  local start=$SECONDS status=0
  echo "== stage $name =="
  "$@" || status=$?
  local line="stage $name: $((SECONDS - start)) s"
  [ "$status" -eq 0 ] || line="$line (FAILED, exit status $status)"
  echo "$line"
  if [ -n "${CI_STAGE_TIMES:-}" ]; then
    echo "$line" >>"$CI_STAGE_TIMES"
  fi
  return "$status"
}
