"""Fault injection: break a small training run and the data jobs in every known way, check nothing is lost.

    python scripts/faultcheck.py [--kills 5] [--fuzz 200] [--disk-full 1] [--seed 0] [--json summary.json]
    python scripts/faultcheck.py --kills 50 --fuzz 5000 --disk-full 3      # the long form (docs/reliability.md)

Prints one line per scenario while it runs, then a table (faults injected, runs recovered, runs bitwise equal
to an unbroken run, files lost, one-line errors, tracebacks) and the reader-fuzz figures; exits non-zero when
anything was lost, a traceback appeared, a recovery was not bitwise, or the fuzz found a crash, hang or error.
"""
import json
import sys

from absl import flags, logging

from jaxdenoise import cli, outputs
from tools import faultsuite as suite

flags.DEFINE_integer("kills", 5, "kill -9 faults")
flags.DEFINE_integer("fuzz", 200, "mutated image files for the reader")
flags.DEFINE_integer("disk-full", 1, "runs whose disk fills up (needs a tmpfs mount: root)")
flags.DEFINE_integer("seed", 0, "seed of the kill times, damage positions and mutations")
flags.DEFINE_list("only", list(suite.SCENARIOS), "scenarios to run: " + ", ".join(suite.SCENARIOS))
flags.DEFINE_string("json", None, "write the summary as JSON here (a new file, or one to replace with --overwrite)")
flags.DEFINE_bool("overwrite", False, "replace an existing --json file")
cli.paths("json")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it reads at INFO
    target = FLAGS.json and outputs.claim(FLAGS.json, "--json", overwrite=FLAGS.overwrite)
    summary = suite.run(FLAGS.kills, FLAGS.fuzz, FLAGS["disk-full"].value, FLAGS.seed, only=FLAGS.only)
    print(suite.format_table(summary))
    if target:
        target.write(json.dumps(summary, indent=1) + "\n")
    if not suite.passed(summary):
        sys.exit("error: the fault check failed (see the notes above)")


if __name__ == "__main__":
    cli.run(main)
