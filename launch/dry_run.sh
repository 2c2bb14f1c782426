# Sourced by the cloud launchers: `run CMD...` runs CMD, or with DRY_RUN=1 prints it.
# `show` quotes only the words that need it, so a dry run can be pasted back into a shell.
show() {
  local out=() a
  for a in "$@"; do [[ "$a" =~ ^[[:alnum:]_./:=,@%+-]+$ ]] && out+=("$a") || out+=("${a@Q}"); done
  echo "${out[*]}"
}
run() { if [[ "${DRY_RUN:-0}" == 1 ]]; then show "$@"; else "$@"; fi; }
