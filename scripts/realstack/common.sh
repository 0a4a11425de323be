# Shared settings for the realstack scripts. Source this file instead of running it.
# Downloads and builds go to AUTOSCALER_CACHE (default ~/.cache/agent-autoscaler),
# never into the repository.

REALSTACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$REALSTACK_DIR/versions.env"
AUTOSCALER_CACHE="${AUTOSCALER_CACHE:-$HOME/.cache/agent-autoscaler}"

log() {
    printf '[%s] %s\n' "$(basename "$0")" "$*" >&2
}
