"""Build the C core extension (himae_stream._core).

Each ISA's micro-kernel file is compiled on its own with that ISA's flags
(and only those files), so the extension runs on any CPU of its
architecture and picks the best kernel at load time.
"""

import glob
import platform

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

C_FLAGS = ["-std=c11", "-O3", "-fno-math-errno"]
PORTABLE = [
    "csrc/json_check.c",
    "csrc/modelfile.c",
    "csrc/conv.c",
    "csrc/winograd.c",
    "csrc/dispatch.c",
    "csrc/model.c",
    "csrc/decoder.c",
    "csrc/stream.c",
    "csrc/streams.c",
    "csrc/framing.c",
    "csrc/heads.c",
    "csrc/gemm_scalar.c",
]
HEADERS = sorted(glob.glob("csrc/*.h"))  # a changed header rebuilds every source (build_ext skips by date)


def isa_sources() -> dict[str, list[str]]:
    """Per-ISA kernel sources for this machine's architecture, with their flags."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return {"csrc/gemm_avx2.c": ["-mavx2", "-mfma"], "csrc/gemm_avx512.c": ["-mavx512f"]}
    if machine in ("aarch64", "arm64"):
        return {"csrc/gemm_neon.c": []}
    return {}


class BuildWithIsaObjects(build_ext):
    """build_ext that first compiles the ISA kernel files with their own flags."""

    def build_extension(self, ext):
        objects = []
        for source, flags in isa_sources().items():
            objects += self.compiler.compile(
                [source], output_dir=self.build_temp, include_dirs=["csrc"],
                extra_postargs=C_FLAGS + flags, depends=HEADERS,
            )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


core = Extension(
    "himae_stream._core",
    sources=["himae_stream/_core.pyx", *PORTABLE],
    # the ISA kernel files too: built apart (BuildWithIsaObjects), a change to one must still relink
    depends=HEADERS + sorted(isa_sources()),
    include_dirs=["csrc", numpy.get_include()],
    extra_compile_args=C_FLAGS,
    libraries=["m"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    ext_modules=cythonize([core], language_level=3),
    cmdclass={"build_ext": BuildWithIsaObjects},
)
