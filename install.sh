#!/usr/bin/env bash
# Installs persys-agent on a fleet host and runs it under systemd.
#
#   curl -fsSL https://example.invalid/install.sh | sudo bash -s -- --source-url https://fleet.example/nodes/{nodeId}.json
#   sudo bash install.sh --tarball persys-agent-0.1.0.tgz --config /root/agent.json
#
# Every choice is a flag and a PERSYS_INSTALL_* variable (the flag wins):
#   --version V            PERSYS_INSTALL_VERSION       agent version from the npm registry (default: latest)
#   --tarball FILE         PERSYS_INSTALL_TARBALL       agent package tarball (`npm pack` output) instead
#   --registry URL         PERSYS_INSTALL_REGISTRY      npm registry (default https://registry.npmjs.org)
#   --node-tarball FILE    PERSYS_INSTALL_NODE_TARBALL  Node.js to use when the host's is missing or too old
#                                                       (an official node-v*-linux-*.tar.* or npm's node-linux-* .tgz)
#   --config FILE|URL      PERSYS_INSTALL_CONFIG        agent config to install (https:// URL or file)
#   --source-url URL       PERSYS_INSTALL_SOURCE_URL    desired-state URL ({nodeId} is replaced) for a new config
#   --status-url URL       PERSYS_INSTALL_STATUS_URL    status URL for a new config
#   --token-file FILE      PERSYS_INSTALL_TOKEN_FILE    bearer token, copied to /etc/persys-agent/token (0600)
#   --node-id ID           PERSYS_INSTALL_NODE_ID       node id for a new config (default: derived by the agent)
#   --state-dir DIR        PERSYS_INSTALL_STATE_DIR     state directory (default /var/lib/persys-agent)
#   --no-start             PERSYS_INSTALL_NO_START=1    do not start or restart the service
#   --no-enable            PERSYS_INSTALL_NO_ENABLE=1   do not enable the service at boot
#   --no-systemd           PERSYS_INSTALL_NO_SYSTEMD=1  no unit at all (a host without systemd)
#   --dry-run              PERSYS_INSTALL_DRY_RUN=1     print what would be done, change nothing
#   --root DIR             PERSYS_INSTALL_ROOT          install under DIR (tests, images); implies --no-start
#
# Layout: /opt/persys-agent/<version> (+ `current` symlink, swapped atomically), /opt/persys-agent/bin/node,
# /etc/persys-agent/config.json (0600; never overwritten: a different new config goes beside it as
# config.json.new), /var/lib/persys-agent (0700), /etc/systemd/system/persys-agent.service,
# /usr/local/bin/persys-agent and /usr/local/bin/persys-agent-uninstall.sh.
# A second run with the same inputs changes nothing and says so; the service restarts only when
# something it runs changed. The whole script is inside main(), so a truncated download runs nothing.

main() {
  set -euo pipefail
  umask 077

  local NODE_MIN=20.18.1
  local DEFAULT_STATE_DIR=/var/lib/persys-agent
  local REGISTRY_DEFAULT=https://registry.npmjs.org

  # ---- options: env first, flags override -------------------------------------------------------
  local version="${PERSYS_INSTALL_VERSION:-}" tarball="${PERSYS_INSTALL_TARBALL:-}"
  local registry="${PERSYS_INSTALL_REGISTRY:-$REGISTRY_DEFAULT}" node_tarball="${PERSYS_INSTALL_NODE_TARBALL:-}"
  local config_src="${PERSYS_INSTALL_CONFIG:-}" source_url="${PERSYS_INSTALL_SOURCE_URL:-}"
  local status_url="${PERSYS_INSTALL_STATUS_URL:-}" token_file="${PERSYS_INSTALL_TOKEN_FILE:-}"
  local node_id="${PERSYS_INSTALL_NODE_ID:-}" state_dir="${PERSYS_INSTALL_STATE_DIR:-$DEFAULT_STATE_DIR}"
  local no_start="${PERSYS_INSTALL_NO_START:-0}" no_enable="${PERSYS_INSTALL_NO_ENABLE:-0}"
  local no_systemd="${PERSYS_INSTALL_NO_SYSTEMD:-0}" dry_run="${PERSYS_INSTALL_DRY_RUN:-0}"
  local root="${PERSYS_INSTALL_ROOT:-}"

  while (($# > 0)); do
    case "$1" in
      --version) need_value "$@"; version=$2; shift 2 ;;
      --tarball) need_value "$@"; tarball=$2; shift 2 ;;
      --registry) need_value "$@"; registry=$2; shift 2 ;;
      --node-tarball) need_value "$@"; node_tarball=$2; shift 2 ;;
      --config) need_value "$@"; config_src=$2; shift 2 ;;
      --source-url) need_value "$@"; source_url=$2; shift 2 ;;
      --status-url) need_value "$@"; status_url=$2; shift 2 ;;
      --token-file) need_value "$@"; token_file=$2; shift 2 ;;
      --node-id) need_value "$@"; node_id=$2; shift 2 ;;
      --state-dir) need_value "$@"; state_dir=$2; shift 2 ;;
      --root) need_value "$@"; root=$2; shift 2 ;;
      --no-start) no_start=1; shift ;;
      --no-enable) no_enable=1; shift ;;
      --no-systemd) no_systemd=1; shift ;;
      --dry-run) dry_run=1; shift ;;
      -h | --help) usage; return 0 ;;
      *) die 2 "unknown option: $1 (see --help)" ;;
    esac
  done
  DRY_RUN=$dry_run
  CHANGES=0

  # ---- refusals, before anything is written ---------------------------------------------------------
  [[ "$(id -u)" -eq 0 ]] || die 1 "must run as root (it writes /opt, /etc and systemd units); try: sudo bash install.sh ..."
  [[ "$(uname -s)" == Linux ]] || die 1 "unsupported system $(uname -s): persys-agent runs on Linux"
  case "$(uname -m)" in
    x86_64 | aarch64 | arm64) ;;
    *) die 1 "unsupported architecture $(uname -m): Node.js builds exist for x86_64 and aarch64" ;;
  esac
  if [[ -n "$root" ]]; then
    [[ "$root" == /* ]] || die 2 "--root must be an absolute path (got $root)"
    [[ -d "$root" ]] || die 2 "--root $root is not a directory"
    root=${root%/}
    no_start=1
  fi
  check_distro "$root/etc/os-release"
  if [[ "$no_systemd" != 1 && -z "$root" && ! -d /run/systemd/system ]]; then
    die 1 "systemd is not running on this host (no /run/systemd/system); persys-agent is installed as a systemd service. Use --no-systemd to install the code and config without a unit."
  fi
  [[ -z "$source_url" ]] || check_url source-url "$source_url"
  [[ -z "$status_url" ]] || check_url status-url "$status_url"
  [[ "$state_dir" == /* ]] || die 2 "--state-dir must be an absolute path (got $state_dir)"
  [[ -z "$token_file" || -r "$token_file" ]] || die 2 "--token-file $token_file is not readable"
  [[ -z "$node_tarball" || -r "$node_tarball" ]] || die 2 "--node-tarball $node_tarball is not readable"
  [[ -z "$tarball" || -r "$tarball" ]] || die 2 "--tarball $tarball is not readable"
  [[ -z "$tarball" || -z "$version" ]] || die 2 "give --tarball or --version, not both"
  if [[ "$config_src" == *://* && "$config_src" != https://* ]]; then
    die 2 "--config must be a file or an https:// URL (got $config_src)"
  fi
  [[ -n "$tarball" || "$registry" == https://* ]] || die 2 "--registry must be https:// (got $registry)"
  if [[ -n "$node_id" && ! "$node_id" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$ ]]; then
    die 2 "--node-id must be 1-253 characters of A-Z a-z 0-9 . _ - (got $node_id)"
  fi

  local OPT="$root/opt/persys-agent" ETC="$root/etc/persys-agent" STATE="$root$state_dir"
  local UNIT_DIR="$root/etc/systemd/system" BIN="$root/usr/local/bin"
  local CONFIG="$ETC/config.json"
  if [[ -z "$config_src" && -z "$source_url" && ! -f "$CONFIG" ]]; then
    die 2 "a first install needs --source-url URL or --config FILE|URL (there is no $CONFIG yet)"
  fi

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/persys-install.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  [[ "$dry_run" == 1 ]] && say "dry run: nothing will be changed"

  # ---- 1. Node ------------------------------------------------------------------------------------
  local node_link_target node_bin
  if [[ -n "$node_tarball" ]]; then
    local node_hash tar_node_version="" found="" known
    node_hash=$(file_hash "$node_tarball")
    # The same tarball installed before: nothing to unpack.
    for known in "$OPT"/node/v*/.tarball-sha256; do
      if [[ -f "$known" && "$(cat "$known")" == "$node_hash" && -x "$(dirname "$known")/bin/node" ]]; then
        tar_node_version=$(basename "$(dirname "$known")")
        found="$(dirname "$known")/bin/node"
      fi
    done
    if [[ -z "$tar_node_version" ]]; then
      mkdir -p "$WORK/node"
      tar -xf "$node_tarball" -C "$WORK/node" || die 1 "cannot unpack --node-tarball $node_tarball"
      found=$(find "$WORK/node" -mindepth 3 -maxdepth 3 -path '*/bin/node' -type f | head -n 1)
      [[ -n "$found" ]] || die 1 "--node-tarball $node_tarball has no */bin/node"
      # The version from the tarball's metadata: the binary runs only once it is in /opt (a host's
      # /tmp is often mounted noexec).
      tar_node_version=$(node_version_of "$(dirname "$(dirname "$found")")") \
        || die 1 "cannot tell the Node.js version of $node_tarball (neither npm's package.json nor a node-vX.Y.Z-* folder)"
      version_at_least "${tar_node_version#v}" "$NODE_MIN" || die 1 "--node-tarball holds node $tar_node_version; persys-agent needs >= $NODE_MIN"
      node_changed=1
      step "install node $tar_node_version into /opt/persys-agent/node/$tar_node_version"
      if [[ "$dry_run" != 1 ]]; then
        # Only the binary (and its licence): the agent's dependencies are bundled, npm is not needed.
        local staged="$OPT/node/.new-$tar_node_version"
        rm -rf "$staged"
        mkdir -p "$staged/bin"
        cp "$found" "$staged/bin/node"
        [[ -f "$(dirname "$(dirname "$found")")/LICENSE" ]] && cp "$(dirname "$(dirname "$found")")/LICENSE" "$staged/"
        printf '%s\n' "$node_hash" >"$staged/.tarball-sha256"
        chmod -R go+rX,go-w "$OPT/node" "$staged"
        rm -rf "$OPT/node/$tar_node_version"
        mv "$staged" "$OPT/node/$tar_node_version"
      fi
    fi
    node_link_target="../node/$tar_node_version/bin/node"
    node_bin="$OPT/node/$tar_node_version/bin/node"
    [[ "$dry_run" == 1 ]] && node_bin=$found
    local runs
    runs=$("$node_bin" --version 2>/dev/null) || die 1 "the node of $node_tarball does not run here ($node_bin: wrong architecture or libc?$([[ "$dry_run" == 1 ]] && printf ' In a dry run it runs from %s, which must allow exec' "${TMPDIR:-/tmp}"))"
    [[ "$runs" == "$tar_node_version" ]] || die 1 "$node_bin says $runs, its tarball says $tar_node_version"
  else
    node_bin=$(find_node "$NODE_MIN") || die 1 "$node_bin"
    node_link_target=$node_bin
  fi
  swap_symlink "$node_link_target" "$OPT/bin/node" "node -> $node_link_target"

  # ---- 2. the agent package ---------------------------------------------------------------------
  if [[ -z "$tarball" ]]; then
    command -v curl >/dev/null 2>&1 || die 1 "curl is needed to download from the npm registry (or give --tarball)"
    if [[ -z "$version" ]]; then
      version=$(curl -fsSL --max-time 60 "$registry/persys-agent/latest" | "$node_bin" -e \
        'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).version))') \
        || die 1 "cannot read the latest persys-agent version from $registry"
    fi
    tarball="$WORK/persys-agent-$version.tgz"
    say "downloading persys-agent $version from $registry"
    curl -fsSL --max-time 600 -o "$tarball" "$registry/persys-agent/-/persys-agent-$version.tgz" \
      || die 1 "cannot download persys-agent $version from $registry"
  fi
  mkdir -p "$WORK/pkg"
  tar -xzf "$tarball" -C "$WORK/pkg" || die 1 "cannot unpack $tarball (not an npm pack tarball?)"
  local pkg="$WORK/pkg/package"
  [[ -f "$pkg/package.json" && -f "$pkg/dist/src/cli/main.js" ]] \
    || die 1 "$tarball is not a persys-agent package (no package/package.json or package/dist/src/cli/main.js)"
  [[ -d "$pkg/node_modules" ]] || die 1 "$tarball has no bundled node_modules: build it with 'npm pack' from a checkout after 'npm ci'"
  [[ -f "$pkg/systemd/persys-agent.service" ]] || die 1 "$tarball has no systemd/persys-agent.service"
  local pkg_name pkg_version
  pkg_name=$("$node_bin" -p 'require(process.argv[1]).name' "$pkg/package.json")
  pkg_version=$("$node_bin" -p 'require(process.argv[1]).version' "$pkg/package.json")
  [[ "$pkg_name" == persys-agent ]] || die 1 "$tarball holds package $pkg_name, not persys-agent"
  [[ "$pkg_version" =~ ^[0-9A-Za-z.+-]+$ ]] || die 1 "odd package version '$pkg_version' in $tarball"
  "$node_bin" "$pkg/dist/src/cli/main.js" version >/dev/null 2>&1 \
    || die 1 "persys-agent $pkg_version does not start with $("$node_bin" --version) ($node_bin)"

  local new_config="$WORK/config.json"
  if [[ -n "$config_src" ]]; then
    if [[ "$config_src" == https://* ]]; then
      curl -fsSL --max-time 60 -o "$new_config" "$config_src" || die 1 "cannot download --config $config_src"
    else
      [[ -r "$config_src" ]] || die 2 "--config $config_src is not readable"
      cp "$config_src" "$new_config"
    fi
  else
    PI_SOURCE_URL=$source_url PI_STATUS_URL=$status_url PI_NODE_ID=$node_id \
      PI_TOKEN=$([[ -n "$token_file" ]] && printf '%s' /etc/persys-agent/token) \
      PI_STATE_DIR=$([[ "$state_dir" != "$DEFAULT_STATE_DIR" ]] && printf '%s' "$state_dir") \
      "$node_bin" -e '
        const e = process.env, c = {};
        if (e.PI_NODE_ID) c.nodeId = e.PI_NODE_ID;
        if (e.PI_STATE_DIR) c.stateDir = e.PI_STATE_DIR;
        if (e.PI_SOURCE_URL) c.source = { url: e.PI_SOURCE_URL, ...(e.PI_TOKEN ? { tokenFile: e.PI_TOKEN } : {}) };
        if (e.PI_STATUS_URL) c.status = { url: e.PI_STATUS_URL };
        process.stdout.write(JSON.stringify(c, null, 2) + "\n");' >"$new_config"
  fi
  # Checked with the loader of the version being installed: a typo is refused before anything changes.
  local config_errors
  config_errors=$("$node_bin" --input-type=module -e '
    const { loadConfig } = await import(process.argv[1]);
    try { loadConfig({ file: process.argv[2], env: {}, flags: {} }); }
    catch (e) { console.log(e.message); process.exit(1); }' "$pkg/dist/src/config/load.js" "$new_config" 2>&1) \
    || die 2 "the config${config_src:+ from $config_src} is not valid for persys-agent $pkg_version: $config_errors"

  local code_changed=0 new_hash old_hash=""
  new_hash=$(file_hash "$tarball")
  [[ -f "$OPT/$pkg_version/.tarball-sha256" ]] && old_hash=$(cat "$OPT/$pkg_version/.tarball-sha256")
  if [[ "$new_hash" != "$old_hash" ]]; then
    step "install persys-agent $pkg_version into /opt/persys-agent/$pkg_version"
    code_changed=1
    if [[ "$dry_run" != 1 ]]; then
      mkdir -p "$OPT"
      chmod 755 "$OPT"
      rm -rf "$OPT/.new-$pkg_version"
      cp -a "$pkg" "$OPT/.new-$pkg_version"
      printf '%s\n' "$new_hash" >"$OPT/.new-$pkg_version/.tarball-sha256"
      chmod -R go+rX,go-w "$OPT/.new-$pkg_version"
      if [[ -e "$OPT/$pkg_version" ]]; then
        # Same version, different content (a rebuilt tarball): replace it under a live `current`.
        rm -rf "$OPT/.old-$pkg_version"
        mv "$OPT/$pkg_version" "$OPT/.old-$pkg_version"
      fi
      mv "$OPT/.new-$pkg_version" "$OPT/$pkg_version"
      rm -rf "$OPT/.old-$pkg_version"
    fi
  fi
  local previous=""
  [[ -L "$OPT/current" ]] && previous=$(readlink "$OPT/current")
  swap_symlink "$pkg_version" "$OPT/current" "current -> $pkg_version${previous:+ (was $previous)}"
  [[ "$previous" == "$pkg_version" ]] || code_changed=1
  prune_versions "$OPT" "$pkg_version" "$previous"

  # ---- 3. config, token, state dir ----------------------------------------------------------------
  local config_changed=0
  ensure_dir "$ETC" 700
  if [[ -n "$token_file" ]]; then
    install_file "$token_file" "$ETC/token" 600 && config_changed=1
  fi
  if [[ ! -f "$CONFIG" ]]; then
    install_file "$new_config" "$CONFIG" 600 && config_changed=1
  elif [[ -z "$config_src" && -z "$source_url" && -z "$status_url" && -z "$node_id" && -z "$token_file" ]]; then
    : # an upgrade without config inputs: the config stays as it is
  elif ! cmp -s "$new_config" "$CONFIG"; then
    # Never overwrite what the operator may have edited; put the new one beside it.
    if install_file "$new_config" "$CONFIG.new" 600; then
      warn "kept $CONFIG as it is; the new config is in $CONFIG.new (compare, then move it over and restart)"
    fi
  fi
  ensure_dir "$STATE" 700

  # ---- 4. CLI, uninstaller, unit ----------------------------------------------------------------
  ensure_dir "$BIN" 755
  write_cli "$WORK/cli" "$state_dir"
  install_file "$WORK/cli" "$BIN/persys-agent" 755 || true
  write_uninstaller "$WORK/uninstall" "$root" "$state_dir" "$no_systemd"
  install_file "$WORK/uninstall" "$BIN/persys-agent-uninstall.sh" 755 || true

  local unit_changed=0
  if [[ "$no_systemd" != 1 ]]; then
    ensure_dir "$UNIT_DIR" 755
    install_file "$pkg/systemd/persys-agent.service" "$UNIT_DIR/persys-agent.service" 644 && unit_changed=1
    local dropin="$UNIT_DIR/persys-agent.service.d/10-install.conf"
    if [[ "$state_dir" != "$DEFAULT_STATE_DIR" ]]; then
      # ProtectSystem=strict: a state dir outside StateDirectory= must be made writable.
      printf '# Written by install.sh (--state-dir %s)\n[Service]\nReadWritePaths=%s\n' "$state_dir" "$state_dir" >"$WORK/dropin"
      ensure_dir "$(dirname "$dropin")" 755
      install_file "$WORK/dropin" "$dropin" 644 && unit_changed=1
    elif [[ -e "$dropin" ]]; then
      step "remove $dropin (default state dir again)"
      [[ "$dry_run" == 1 ]] || rm -f "$dropin"
      unit_changed=1
    fi
  fi

  # ---- 5. service -------------------------------------------------------------------------------
  if [[ "$no_systemd" == 1 || -n "$root" ]]; then
    [[ -n "$root" ]] && say "--root: not touching systemd (daemon-reload, enable, start)"
  else
    if ((unit_changed)); then
      step "systemctl daemon-reload"
      [[ "$dry_run" == 1 ]] || systemctl daemon-reload
    fi
    if [[ "$no_enable" != 1 ]] && ! systemctl is-enabled --quiet persys-agent 2>/dev/null; then
      step "systemctl enable persys-agent"
      [[ "$dry_run" == 1 ]] || systemctl enable --quiet persys-agent
    fi
    if [[ "$no_start" != 1 ]]; then
      if ! systemctl is-active --quiet persys-agent; then
        step "systemctl start persys-agent (waits for READY=1 after the first reconcile)"
        [[ "$dry_run" == 1 ]] || systemctl start persys-agent || die 1 "persys-agent did not start; see: journalctl -u persys-agent -n 50"
      elif ((code_changed || unit_changed || config_changed || node_changed)); then
        step "systemctl restart persys-agent (something it runs changed)"
        [[ "$dry_run" == 1 ]] || systemctl restart persys-agent || die 1 "persys-agent did not restart; see: journalctl -u persys-agent -n 50"
      fi
    fi
  fi

  if ((CHANGES == 0)); then
    say "No change detected: persys-agent $pkg_version is installed as asked; nothing written, nothing restarted"
  elif [[ "$dry_run" == 1 ]]; then
    say "dry run: $CHANGES change(s) would be made"
  else
    say "persys-agent $pkg_version installed ($CHANGES change(s)); uninstall with persys-agent-uninstall.sh [--purge]"
  fi
}

# ---- helpers (defined before main runs; main is called on the last line) ------------------------------
usage() { sed -n '2,/^$/p' "${BASH_SOURCE[0]:-install.sh}" 2>/dev/null | sed 's/^# \{0,1\}//' || true; }
say() { printf 'install: %s\n' "$*"; }
warn() { printf 'install: WARNING: %s\n' "$*" >&2; }
die() {
  local code=$1
  shift
  printf 'install: ERROR: %s\n' "$*" >&2
  exit "$code"
}
need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die 2 "option $1 needs a value"; }

# step TEXT: one change, printed as done (or as "would" in a dry run), counted.
node_changed=0
step() {
  CHANGES=$((CHANGES + 1))
  if [[ "$DRY_RUN" == 1 ]]; then say "would: $*"; else say "$*"; fi
}

version_at_least() { # have want -> 0 when have >= want (numeric x.y.z)
  local have=$1 want=$2 i h w
  local -a hv wv
  IFS=. read -r -a hv <<<"${have%%-*}"
  IFS=. read -r -a wv <<<"$want"
  for i in 0 1 2; do
    h=${hv[$i]:-0} w=${wv[$i]:-0}
    ((10#$h > 10#$w)) && return 0
    ((10#$h < 10#$w)) && return 1
  done
  return 0
}

check_distro() { # os-release path
  local file=$1 id="" id_like=""
  [[ -r "$file" ]] || file=/etc/os-release
  [[ -r "$file" ]] || die 1 "unsupported distribution: no /etc/os-release"
  id=$(sed -n 's/^ID=//p' "$file" | tr -d '"' | head -n 1)
  id_like=$(sed -n 's/^ID_LIKE=//p' "$file" | tr -d '"' | head -n 1)
  case " $id $id_like " in
    *" debian "* | *" ubuntu "* | *" rhel "* | *" fedora "* | *" centos "* | *" suse "* | *" arch "*) ;;
    *) die 1 "unsupported distribution '$id' (from $file): supported are Debian, Ubuntu, RHEL/Fedora, SUSE and Arch families (glibc and systemd)" ;;
  esac
}

check_url() { # flag url
  local flag=$1 url=$2 host
  case "$url" in
    https://* | file://*) ;;
    http://*)
      host=${url#http://}
      host=${host%%/*}
      host=${host##*@}
      case "$host" in
        127.* | localhost | localhost:* | '[::1]' | '[::1]:'*) ;;
        *) die 2 "--$flag $url is plain http://: use https:// (plain http is allowed to loopback only)" ;;
      esac
      ;;
    *) die 2 "--$flag must be an https:// or file:// URL (got $url)" ;;
  esac
}

find_node() { # min version -> path of a suitable node on stdout, or a reason (and status 1)
  local min=$1 candidate have candidate_version
  for candidate in "$(command -v node 2>/dev/null || true)" /usr/bin/node; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    have=$("$candidate" --version 2>/dev/null) || continue
    if version_at_least "${have#v}" "$min"; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  if command -v apt-cache >/dev/null 2>&1; then
    candidate_version=$(apt-cache policy nodejs 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n 1)
    if [[ -n "$candidate_version" && "$candidate_version" != "(none)" ]] && version_at_least "${candidate_version#*:}" "$min"; then
      say "installing Debian's nodejs $candidate_version" >&2
      if [[ "$DRY_RUN" != 1 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >&2 || { echo "apt-get install nodejs failed"; return 1; }
      fi
      printf '%s\n' /usr/bin/node
      return 0
    fi
    printf 'no Node.js >= %s here and the distribution offers nodejs %s: pass --node-tarball FILE (a Node %s+ linux tarball)\n' \
      "$min" "${candidate_version:-none}" "${min%%.*}"
    return 1
  fi
  printf 'no Node.js >= %s found: pass --node-tarball FILE (a Node %s+ linux tarball)\n' "$min" "${min%%.*}"
  return 1
}

# node_version_of DIR: vX.Y.Z of an unpacked Node tarball (npm's node-linux-* package or an official one).
node_version_of() {
  local home=$1 v=""
  if [[ -f "$home/package.json" ]]; then
    v=$(sed -n 's/^ *"version": *"\([0-9][0-9.]*\)".*/\1/p' "$home/package.json" | head -n 1)
  else
    v=$(basename "$home" | sed -n 's/^node-v\([0-9][0-9.]*\)-.*/\1/p')
  fi
  [[ -n "$v" ]] || return 1
  printf 'v%s\n' "$v"
}

# file_hash FILE: what "the same input" means: the same tarball bytes (as k3s compares its binary's hash).
file_hash() { sha256sum "$1" | cut -d' ' -f1; }

# swap_symlink TARGET LINK TEXT: points LINK at TARGET with one rename (atomic for readers).
swap_symlink() {
  local target=$1 link=$2 text=$3
  if [[ -L "$link" && "$(readlink "$link")" == "$target" ]]; then return 0; fi
  [[ "$link" == */bin/node ]] && node_changed=1
  step "$text"
  [[ "$DRY_RUN" == 1 ]] && return 0
  mkdir -p "$(dirname "$link")"
  ln -sfn "$target" "$link.new.$$"
  mv -T "$link.new.$$" "$link"
}

# install_file SRC DEST MODE: writes DEST (temp file + rename) only when its content or mode differ.
# Returns 0 when it changed something, 1 when DEST was already so.
install_file() {
  local src=$1 dest=$2 mode=$3
  if [[ -f "$dest" ]] && cmp -s "$src" "$dest" && [[ "$(stat -c %a "$dest")" == "$mode" ]]; then return 1; fi
  step "write $dest (mode $mode)"
  [[ "$DRY_RUN" == 1 ]] && return 0
  cp "$src" "$dest.new.$$"
  chmod "$mode" "$dest.new.$$"
  mv -f "$dest.new.$$" "$dest"
  return 0
}

ensure_dir() { # dir mode
  local dir=$1 mode=$2
  if [[ -d "$dir" && "$(stat -c %a "$dir")" == "$mode" ]]; then return 0; fi
  step "make $dir (mode $mode)"
  [[ "$DRY_RUN" == 1 ]] && return 0
  mkdir -p "$dir"
  chmod "$mode" "$dir"
}

# prune_versions OPT KEEP PREVIOUS: keeps the current and the previous version (for a quick rollback).
prune_versions() {
  local opt=$1 keep=$2 prev=$3 d name
  [[ -d "$opt" ]] || return 0
  for d in "$opt"/*/; do
    name=$(basename "$d")
    [[ "$name" == "$keep" || "$name" == "$prev" || "$name" == bin || "$name" == node || "$name" == current ]] && continue
    [[ -f "$d/.tarball-sha256" ]] || continue
    step "remove old version /opt/persys-agent/$name"
    [[ "$DRY_RUN" == 1 ]] || rm -rf "$d"
  done
}

write_cli() { # file state_dir
  cat >"$1" <<CLI
#!/bin/sh
# persys-agent CLI, written by install.sh. The state dir is the one the service uses, so
# \`persys-agent status\` and \`doctor\` find the running agent.
: "\${STATE_DIRECTORY:=$2}"
export STATE_DIRECTORY
exec /opt/persys-agent/bin/node /opt/persys-agent/current/dist/src/cli/main.js "\$@"
CLI
}

write_uninstaller() { # file root state_dir no_systemd
  cat >"$1" <<UNINSTALL
#!/usr/bin/env bash
# Removes persys-agent (written by install.sh): unit, code and CLI. Keeps /etc/persys-agent and the
# state dir unless --purge. Running workloads keep running, unless --remove-workloads: then the agent
# is first run once more with an empty desired state (same generation, so the rollback guard takes it)
# until it has removed everything it manages (bounded: 300 s).
#   persys-agent-uninstall.sh [--purge] [--remove-workloads] [--dry-run]
main() {
  set -euo pipefail
  local ROOT='$2' STATE_DIR='$3' NO_SYSTEMD='$4'
  local purge=0 dry=0 remove_workloads=0
  while ((\$# > 0)); do
    case "\$1" in
      --purge) purge=1 ;;
      --remove-workloads) remove_workloads=1 ;;
      --dry-run) dry=1 ;;
      -h | --help) sed -n '2,5p' "\$0"; return 0 ;;
      *) echo "persys-agent-uninstall: unknown option \$1" >&2; return 2 ;;
    esac
    shift
  done
  [[ "\$(id -u)" -eq 0 ]] || { echo "persys-agent-uninstall: must run as root" >&2; return 1; }
  act() { if ((dry)); then echo "uninstall: would: \$*"; else echo "uninstall: \$*"; "\$@"; fi; }
  local systemd=0
  [[ "\$NO_SYSTEMD" != 1 && -z "\$ROOT" ]] && command -v systemctl >/dev/null 2>&1 && systemd=1
  if ((systemd)); then
    if systemctl is-active --quiet persys-agent || systemctl is-enabled --quiet persys-agent 2>/dev/null; then
      act systemctl disable --now persys-agent
    fi
  fi
  if ((remove_workloads)); then
    ((systemd)) && act systemctl stop persys-agent
    if ((dry)); then
      echo "uninstall: would: run the agent with an empty desired state until its workloads are removed"
    else
      remove_all_workloads
    fi
  fi
  local p
  for p in "\$ROOT/etc/systemd/system/persys-agent.service" "\$ROOT/etc/systemd/system/persys-agent.service.d" \\
    "\$ROOT/opt/persys-agent" "\$ROOT/usr/local/bin/persys-agent"; do
    [[ -e "\$p" || -L "\$p" ]] && act rm -rf "\$p"
  done
  ((systemd)) && act systemctl daemon-reload
  if ((purge)); then
    for p in "\$ROOT/etc/persys-agent" "\$ROOT\$STATE_DIR"; do
      [[ -e "\$p" ]] && act rm -rf "\$p"
    done
  else
    echo "uninstall: kept \$ROOT/etc/persys-agent and \$ROOT\$STATE_DIR (use --purge to remove them)"
  fi
  act rm -f "\$ROOT/usr/local/bin/persys-agent-uninstall.sh"
  echo "uninstall: persys-agent removed"
}
# Runs the installed agent (not the service) against an empty document and waits until the status it
# reports lists no workload; then stops it with SIGTERM.
remove_all_workloads() {
  local node="\$ROOT/opt/persys-agent/bin/node" main_js="\$ROOT/opt/persys-agent/current/dist/src/cli/main.js"
  local config="\$ROOT/etc/persys-agent/config.json" state="\$ROOT\$STATE_DIR" empty pid n i
  [[ -x "\$node" && -f "\$main_js" ]] || { echo "uninstall: the agent is not installed; cannot remove workloads" >&2; return 1; }
  # The node id and generation in force, from the store (a fresh store: generation 0, derived id).
  local facts
  # Store v2 keeps the document in desired.json; an older state.json still carries it itself.
  facts=\$("\$node" -e '
    const read = (f) => { try { return JSON.parse(require("fs").readFileSync(f, "utf8")); } catch { return {}; } };
    const d = read(process.argv[1]), w = read(process.argv[2]);
    const doc = (w.desired && w.desired.document) || (d.desired && d.desired.document) || {};
    console.log((d.nodeId || doc.nodeId || "*") + " " + (doc.generation || 0));' "\$state/state.json" "\$state/desired.json")
  empty=\$(mktemp "\${TMPDIR:-/tmp}/persys-empty.XXXXXX")
  printf '{"apiVersion":"persys.dev/v1","kind":"DesiredState","nodeId":"%s","generation":%s,"workloads":[]}\n' "\${facts%% *}" "\${facts##* }" >"\$empty"
  echo "uninstall: removing the workloads of node \${facts%% *} (the agent applies an empty desired state)"
  STATE_DIRECTORY=\$state "\$node" "\$main_js" run --config "\$config" --source.url="file://\$empty" --metrics.listen=off >/dev/null &
  pid=\$!
  for ((i = 0; i < 300; i++)); do
    sleep 1
    kill -0 "\$pid" 2>/dev/null || { rm -f "\$empty"; echo "uninstall: the agent exited before removing the workloads" >&2; return 1; }
    n=\$(STATE_DIRECTORY=\$state "\$node" "\$main_js" status --config "\$config" --json 2>/dev/null \\
      | "\$node" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const r=JSON.parse(s);console.log(r.observedGeneration===null?-1:r.workloads.length)}catch{console.log(-1)}})') || n=-1
    [[ "\$n" == 0 ]] && break
  done
  kill -TERM "\$pid" 2>/dev/null || true
  wait "\$pid" 2>/dev/null || true
  rm -f "\$empty"
  [[ "\$n" == 0 ]] || { echo "uninstall: workloads still present after 300 s; see persys-agent status. Nothing was removed." >&2; return 1; }
  echo "uninstall: all workloads removed"
}

main "\$@"
UNINSTALL
}

main "$@"
