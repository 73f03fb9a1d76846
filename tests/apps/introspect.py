"""A child for test_zygote: prints what a process knows of itself, then exits with the code in argv[1] (or sleeps)."""
import json
import os
import sys
import time

print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "pid": os.getpid(), "env": os.environ.get("ZYGOTE_TEST"),
                  "main": __name__, "sid": os.getsid(0),
                  "path": sys.path[:3]}), flush=True)
print("to stderr", file=sys.stderr)
if sys.argv[1] == "sleep":
    time.sleep(600)
sys.exit(int(sys.argv[1]))
