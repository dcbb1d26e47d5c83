/*
 * gate_marker.c - callgrind client requests for benchmarks/gate.py.
 *
 * Python cannot issue valgrind client requests itself; benchmarks/workload.py
 * loads this tiny library with ctypes so that callgrind counts only the
 * workload regions, each dumped under its own name. Outside valgrind every
 * request is a no-op.
 */
#include <valgrind/callgrind.h>

/* Start instrumenting (the process runs with --instr-atstart=no until here). */
void gate_instrument(void) { CALLGRIND_START_INSTRUMENTATION; }

/* Count from here. */
void gate_begin(void) { CALLGRIND_TOGGLE_COLLECT; }

/* Stop counting and dump what was counted since the last dump as `name`. */
void gate_end(const char *name)
{
    CALLGRIND_TOGGLE_COLLECT;
    CALLGRIND_DUMP_STATS_AT(name);
}
