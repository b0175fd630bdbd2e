# E2E-VM OBSERVATION HOOK (BASH_ENV of cloud-final.service, set by scripts/e2e-vm's image):
# cloud-init's runcmd script ignores each step's exit code, so this runs every agent-army step
# (bash /var/lib/agent-army/bootstrap/NN-*.sh) unchanged in a child bash, without BASH_ENV,
# and records its exit code in /var/log/e2e-vm-steps.log; it also prints begin/end marker lines
# (into /var/log/cloud-init-output.log) so each step's output can be told apart. Other bash
# invocations: no effect.
if [ -z "${E2E_VM_STEP_WRAPPED:-}" ]; then
  case "$0" in
    /var/lib/agent-army/bootstrap/*.sh)
      export E2E_VM_STEP_WRAPPED=1
      unset BASH_ENV
      echo "$(date +%s) start ${0##*/}" >>/var/log/e2e-vm-steps.log
      echo "=== e2e-vm: begin ${0##*/} ==="
      bash "$0" "$@"
      e2e_vm_rc=$?
      echo "=== e2e-vm: end ${0##*/} rc=$e2e_vm_rc ==="
      echo "$(date +%s) end ${0##*/} rc=$e2e_vm_rc" >>/var/log/e2e-vm-steps.log
      exit "$e2e_vm_rc"
      ;;
  esac
fi
