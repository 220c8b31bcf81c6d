# Sourced (from the repository root) by every script that builds or runs the
# release binaries, so they share one target dir and one set of compiler flags
# and none rebuilds the others' work.
#
# - CARGO_TARGET_DIR: outside the clone, so a fresh clone reuses the slow
#   bundled DuckDB build. Made absolute: rustc reads the profile below from
#   each crate's own folder.
# - RUSTFLAGS: the committed profile (pgo/README.md) is applied to the whole
#   build (profile-guided optimisation). The profile is used from a copy named
#   by its content hash: a new profile changes the flags, so cargo rebuilds,
#   and a build made with an older profile is never taken for a current one.
#   LAKEHOUSE_PGO=off builds without it (another target dir is then wise).
CARGO_TARGET_DIR="$(realpath -m "${CARGO_TARGET_DIR:-$HOME/.cache/lakehouse/target}")"
export CARGO_TARGET_DIR
if [ "${LAKEHOUSE_PGO:-on}" = off ]; then
  :
elif [ ! -f pgo/lakehouse.profdata ]; then
  echo "build_env: pgo/lakehouse.profdata is missing; building without a profile" >&2
else
  lakehouse_profile="$CARGO_TARGET_DIR/pgo/$(sha256sum pgo/lakehouse.profdata | cut -c1-16).profdata"
  if [ ! -f "$lakehouse_profile" ]; then
    mkdir -p "$CARGO_TARGET_DIR/pgo"
    # A private temporary name, renamed into place whole: builds starting
    # together never see, or trip over, a half-written copy.
    lakehouse_tmp=$(mktemp "$CARGO_TARGET_DIR/pgo/.copy.XXXXXX")
    cp pgo/lakehouse.profdata "$lakehouse_tmp" && mv -f "$lakehouse_tmp" "$lakehouse_profile"
    unset lakehouse_tmp
  fi
  case " ${RUSTFLAGS:-} " in
    *" -Cprofile-use=$lakehouse_profile "*) ;;
    *) export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-use=$lakehouse_profile" ;;
  esac
  unset lakehouse_profile
fi
