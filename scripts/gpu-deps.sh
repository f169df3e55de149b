#!/usr/bin/env bash
# Downloads (apt-get download: nothing is installed) the Debian bookworm .deb files of
# foldfarm's build and run-time dependencies other than LibTorch and CUDA, and the shared
# libraries they need, into a git-ignored folder, for a GPU machine that cannot download
# anything (scripts/gpu-check.sh unpacks them there with dpkg -x; see docs/gpu.md).
#   scripts/gpu-deps.sh [--dir DIR]      (default DIR: .gpu-deps in the repository root)
# Then it unpacks the bundle into a scratch folder and checks it: every NEEDED soname of
# every ELF file in it is either in the bundle or a base library of any glibc system
# (libc, libm, libstdc++, libgcc_s, ...), and prints the newest glibc symbol version used
# and the sizes (bundle, the files the GPU run copies; the copy is limited to 64 MiB).
# Needs apt-get (Debian 12, amd64) and the package lists (apt-get update as root first).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=.gpu-deps
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "gpu-deps.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# What CMake looks for (cmake/FoldfarmDeps.cmake, cmake/FoldfarmTesting.cmake): headers,
# the unversioned .so links and CMake config files. Only these packages' files are taken,
# not their Depends (libhdf5-dev would pull gfortran, libcurl-dev, libssl-dev, ...).
dev_packages=(
  libhdf5-dev          # hdf5.h, hdf5/serial/libhdf5.so (FindHDF5, HDF5_ROOT)
  libopenmpi-dev       # mpi.h, libmpi.so, libmpi_cxx.so (FindMPI)
  libspdlog-dev        # spdlogConfig.cmake (external fmt)
  libfmt-dev           # fmt-config.cmake, fmt headers spdlog was built against
  nlohmann-json3-dev   # nlohmann_jsonConfig.cmake 3.11
  libcli11-dev         # CLI11Config.cmake
  libsqlite3-dev       # sqlite3.h, libsqlite3.so (FindSQLite3)
  zlib1g-dev           # zlib.h, libz.so (FindZLIB)
  libgtest-dev         # GTestConfig.cmake, libgtest.a, libgtest_main.a
)
# Run time: the shared libraries the above link and their library dependencies (bookworm's
# Depends, followed by hand), mpirun/orted. Left out: libc6, libstdc++6, libgcc-s1 (any
# image has them), openssh-client (mpirun on one node needs no ssh), libhwloc-plugins (X11,
# OpenCL, NVML discovery plugins; optional) and documentation.
runtime_packages=(
  libhdf5-103-1 libsz2 libaec0
  libcurl4 libbrotli1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1
  libcom-err2 libidn2-0 libunistring2 libldap-2.5-0 libsasl2-2 libsasl2-modules-db libdb5.3
  libgnutls30 libgmp10 libhogweed6 libnettle8 libp11-kit0 libtasn1-6 libffi8
  libnghttp2-14 libpsl5 librtmp1 libssh2-1 libssl3 libzstd1 zlib1g
  libopenmpi3 openmpi-bin openmpi-common
  libevent-core-2.1-7 libevent-pthreads-2.1-7 libpmix2 libmunge2 libhwloc15 libudev1
  libfabric1 libucx0 libibverbs1 ibverbs-providers librdmacm1 libnl-3-200 libnl-route-3-200
  libpsm-infinipath1 libpsm2-2 libnuma1 libuuid1 libatomic1
  libspdlog1.10 libfmt9 libsqlite3-0
)
packages=("${dev_packages[@]}" "${runtime_packages[@]}")

command -v apt-get >/dev/null || { echo "gpu-deps.sh: needs apt-get (Debian 12)" >&2; exit 1; }
if ! apt-cache show --no-all-versions libhdf5-103-1 >/dev/null 2>&1; then
  echo "gpu-deps.sh: no package lists; run 'apt-get update' (as root) first" >&2
  exit 1
fi

# Download into a fresh folder first, so that a failed run leaves the old bundle whole.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-deps.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debs"
chmod 755 "$tmp" && chmod 777 "$tmp/debs"  # apt's download sandbox user (_apt) writes there
echo "gpu-deps: downloading ${#packages[@]} packages (amd64)" >&2
(cd "$tmp/debs" && apt-get download -q "${packages[@]/%/:amd64}" >/dev/null)
count=$(find "$tmp/debs" -name '*.deb' | wc -l)
if [ "$count" -ne "${#packages[@]}" ]; then
  echo "gpu-deps.sh: expected ${#packages[@]} .deb files, got $count" >&2
  exit 1
fi

# Check: unpack and resolve every NEEDED soname inside the bundle or the base set.
root="$tmp/root"
mkdir -p "$root"
for d in "$tmp"/debs/*.deb; do dpkg-deb -x "$d" "$root"; done
base_sonames=" libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libresolv.so.2 \
libutil.so.1 libcrypt.so.1 ld-linux-x86-64.so.2 libstdc++.so.6 libgcc_s.so.1 "
# One readelf over the libraries and programs: "File: f" headers, then SONAME/NEEDED lines.
elf_list="$tmp/elf.txt"
find "$root" -type f \( -name '*.so*' -o -path '*/bin/*' -o -path '*/libexec/*' \) -print0 |
  xargs -0 readelf -d 2>/dev/null >"$elf_list" || true
provided=" $(sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p' "$elf_list" | tr '\n' ' ')"
missing=$(awk -v have="$provided$base_sonames" '
  /^File: / { f = $2; next }
  /\(NEEDED\)/ { so = $0; sub(/.*\[/, "", so); sub(/\].*/, "", so)
                  if (index(have, " " so " ") == 0) print "  " f " needs " so }' "$elf_list" |
          sed "s|$root||")
if [ -n "$missing" ]; then
  echo "gpu-deps.sh: sonames needed but neither bundled nor base libraries:" >&2
  printf '%s\n' "$missing" >&2
  exit 1
fi
glibc=$(find "$root" -type f \( -name '*.so*' -o -path '*/bin/*' -o -path '*/libexec/*' \) -print0 |
        xargs -0 readelf -V 2>/dev/null | grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2 -n -u |
        tail -1 || true)

# Replace the bundle.
mkdir -p "$dir"
find "$dir" -maxdepth 1 -name '*.deb' -delete
mv "$tmp"/debs/*.deb "$dir"/
{
  echo "# scripts/gpu-deps.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), Debian $(cat /etc/debian_version)"
  echo "# newest glibc symbol version used: ${glibc:-none}"
  for d in "$dir"/*.deb; do
    printf '%s %s %s\n' "$(dpkg-deb -f "$d" Package)" "$(dpkg-deb -f "$d" Version)" \
      "$(sha256sum "$d" | cut -c1-16)"
  done
} >"$dir/MANIFEST.txt"

bundle_kib=$(du -sk "$dir" | cut -f1)
tree_kib=$(git ls-files -z -co --exclude-standard | du -ck --files0-from=- 2>/dev/null |
           tail -1 | cut -f1)
echo "gpu-deps: $count packages in $dir: $((bundle_kib / 1024)) MiB" \
     "(unpacked $(du -sm "$root" | cut -f1) MiB); needs glibc >= ${glibc#GLIBC_}"
echo "gpu-deps: files the GPU run copies: work tree $((tree_kib / 1024)) MiB +" \
     "bundle = $(((tree_kib + bundle_kib) / 1024)) MiB of 64 MiB"
if [ $((tree_kib + bundle_kib)) -gt $((60 * 1024)) ]; then
  echo "gpu-deps.sh: over 60 MiB: the GPU run's copy (64 MiB) would not fit" >&2
  exit 1
fi
