"""Peak RSS of a subprocess, for the memory tests: paste PEAK_RSS in front of its code."""

#: Peak RSS in a subprocess. resource.getrusage's ru_maxrss survives exec (a child of pytest starts with
#: pytest's peak), so the peak is the process image's own VmHWM, reset to the current RSS first.
PEAK_RSS = """
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")
def peak():
    return _status("VmHWM")
"""

