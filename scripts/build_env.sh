# Sourced (from the repository root) by every script that builds or runs the
# release binaries, so they share one target dir and one set of compiler flags
# and none rebuilds the others' work.
#
# - CARGO_TARGET_DIR: outside the clone, so a fresh clone reuses the slow
#   bundled DuckDB build.
# - RUSTFLAGS: the committed profile (pgo/README.md) is applied to the whole
#   build (profile-guided optimisation). The profile is used from a copy named
#   by its content hash: a new profile changes the flags, so cargo rebuilds,
#   and a build made with an older profile is never taken for a current one.
#   LAKEHOUSE_PGO=off builds without it (another target dir is then wise).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lakehouse/target}"
if [ "${LAKEHOUSE_PGO:-on}" != off ] && [ -f pgo/lakehouse.profdata ]; then
  lakehouse_profile="$CARGO_TARGET_DIR/pgo/$(sha256sum pgo/lakehouse.profdata | cut -c1-16).profdata"
  if [ ! -f "$lakehouse_profile" ]; then
    mkdir -p "$CARGO_TARGET_DIR/pgo"
    cp pgo/lakehouse.profdata "$lakehouse_profile.tmp"
    mv "$lakehouse_profile.tmp" "$lakehouse_profile"
  fi
  case " ${RUSTFLAGS:-} " in
    *" -Cprofile-use=$lakehouse_profile "*) ;;
    *) export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-use=$lakehouse_profile" ;;
  esac
  unset lakehouse_profile
fi
