"""The bookkeeping the Python client scripts share: each check's outcome is
printed as ok, GAP (a known server gap, listed in the script) or FAIL; a listed
gap that passes is a failure too, so the lists stay exact; the run fails when
anything failed."""

import sys


class Results:
    def __init__(self, known_gaps):
        self.known_gaps = known_gaps
        self.passed, self.gaps, self.failures = [], [], []

    def record(self, name, got, problem):
        """Records one check: `problem` is None when `got` was what was expected."""
        if problem is None and name in self.known_gaps:
            self.failures.append(f"{name}: now passes; remove it from KNOWN_SERVER_GAPS")
        elif problem is None:
            self.passed.append(name)
            print(f"ok    {name}: {got!r}")
        elif name in self.known_gaps:
            self.gaps.append(name)
            print(f"GAP   {name} (known server gap): {problem}")
        else:
            self.failures.append(f"{name}: {problem}")
            print(f"FAIL  {name}: {problem}")

    def finish(self):
        """Prints the summary and exits non-zero when a check failed."""
        print(
            f"\n{len(self.passed)} passed, {len(self.gaps)} known server gaps, "
            f"{len(self.failures)} failed"
        )
        if self.failures:
            print("FAILED:\n  " + "\n  ".join(self.failures), file=sys.stderr)
            sys.exit(1)
