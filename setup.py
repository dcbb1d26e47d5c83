"""Build the C core extension (himae_stream._core).

Each ISA's micro-kernel file is compiled on its own with that ISA's flags
(and only those files), so the extension runs on any CPU of its
architecture and picks the best kernel at load time.
"""

import glob
import os
import platform
from concurrent.futures import ThreadPoolExecutor

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

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
    """build_ext that compiles every C file on its own, each ISA kernel file with its ISA's flags, as many
    at once as the machine has cores (a newcomer's first install waits on this), then links them."""

    def build_extension(self, ext):
        target = self.get_ext_fullpath(ext.name)
        if not (self.force or newer_group(ext.sources + ext.depends, target, "newer")):
            return super().build_extension(ext)  # up to date: it says so and does nothing
        macros = ext.define_macros + [(name,) for name in ext.undef_macros]
        jobs = [(source, ext.include_dirs, ext.extra_compile_args) for source in ext.sources]
        jobs += [(source, ["csrc"], C_FLAGS + flags) for source, flags in isa_sources().items()]
        # the longest first: the Cython module's C file takes as long as several of the others
        jobs.sort(key=lambda job: -os.path.getsize(job[0]))

        def compile_one(job):
            source, include_dirs, flags = job
            return self.compiler.compile([source], output_dir=self.build_temp, macros=macros, debug=self.debug,
                                         include_dirs=include_dirs, extra_postargs=flags, depends=ext.depends)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            objects = [o for batch in pool.map(compile_one, jobs) for o in batch]
        ext.extra_objects = list(ext.extra_objects or []) + objects
        sources, ext.sources, force, self.force = ext.sources, [], self.force, True  # compiled: only link
        try:
            super().build_extension(ext)
        finally:
            ext.sources, self.force = sources, force


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
