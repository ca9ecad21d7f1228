"""ctest: libsamfast and a host program linking it need only OpenVINO (and the C/C++ runtime and
libcrypto): read with binutils' readelf (DT_NEEDED of libsamfast.so) and the dynamic loader's ldd
(everything the host program maps at start), no LibTorch / c10 / CUDA library anywhere.

    check_links.py build/csrc/libsamfast.so build/csrc/samfast_segment
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

# What OpenVINO-only libsamfast may bring into a host: the C/C++ runtime, libcrypto (sha256),
# OpenVINO and the TBB it runs on.
ALLOWED = re.compile(
    r"^(linux-vdso|ld-linux[\w-]*|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libcrypto|"
    r"libz|libopenvino|libtbb|libtbbmalloc|libhwloc|libsamfast)\.so"
)
FORBIDDEN = re.compile(r"torch|c10|cuda|cudnn|nvinfer|gomp", re.IGNORECASE)


def needed(path: str) -> list[str]:
    out = subprocess.run(["readelf", "-d", path], check=True, capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def mapped(path: str) -> list[str]:
    out = subprocess.run(["ldd", path], check=True, capture_output=True, text=True).stdout
    return [line.split()[0].rsplit("/", 1)[-1] for line in out.splitlines() if line.strip()]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    library, host = sys.argv[1:]
    for tool in ("readelf", "ldd"):
        if shutil.which(tool) is None:
            print(f"{tool} not found (Debian: apt-get install binutils libc-bin)", file=sys.stderr)
            return 2
    failures = []
    direct = needed(library)
    print(f"{library} needs: {', '.join(direct)}")
    if not any(name.startswith("libopenvino.so") for name in direct):
        failures.append("libsamfast.so does not link libopenvino")
    closure = mapped(host)
    print(f"{host} maps at start: {', '.join(closure)}")
    for name in direct + closure:
        if FORBIDDEN.search(name) or not ALLOWED.match(name):
            failures.append(f"unexpected library {name}")
    for line in failures:
        print("FAIL", line)
    print(f"{2 - bool(failures)} passed, {int(bool(failures))} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
