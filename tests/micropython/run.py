"""Run the driver tests of this directory without pytest: under MicroPython (which has no unittest).

    micropython tests/micropython/run.py <root of the hal package> [test_module ...]

The root is usually the repository; the mpy-cross gate points it at a tree of compiled .mpy files
instead, so the same tests then run against the bytecode a Pico would load. Imports each test module, calls every ``test_*`` function, prints one line per test and a
summary, and exits 1 if any test failed or none ran. The same files run under pytest on CPython.
"""

import sys


def _print_exception(exc):
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)
    else:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)


def main(argv):
    root = argv[1] if len(argv) > 1 else "."
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.insert(0, here)
    sys.path.insert(0, root)
    import gc
    import os

    if len(argv) > 2:
        modules = [name[:-3] if name.endswith(".py") else name for name in argv[2:]]
    else:
        modules = sorted(name[:-3] for name in os.listdir(here) if name.startswith("test_") and name.endswith(".py"))
    passed = 0
    failed = []
    for module_name in modules:
        try:
            module = __import__(module_name)
        except Exception as exc:
            print("ERROR importing", module_name)
            _print_exception(exc)
            failed.append(module_name)
            continue
        for name in sorted(dir(module)):
            if not name.startswith("test_"):
                continue
            func = getattr(module, name)
            if not callable(func):
                continue
            label = module_name + "::" + name
            try:
                func()
            except Exception as exc:
                print("FAIL", label)
                _print_exception(exc)
                failed.append(label)
            else:
                print("PASS", label)
                passed += 1
        # Free the module before the next one: under MicroPython the heap is small and fixed.
        del module
        sys.modules.pop(module_name, None)
        gc.collect()
    import hal.errors

    print("hal loaded from", getattr(hal.errors, "__file__", "?"))
    print("%d passed, %d failed on %s" % (passed, len(failed), sys.implementation.name))
    if failed or not passed:
        sys.exit(1)


main(sys.argv)
