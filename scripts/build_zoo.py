"""Maintainers: write a zoo model (jaxdenoise/zoo/NAME.jaxdn and NAME.md) from a trained run (scripts/tools/zoo_build.py).

    python scripts/build_zoo.py --name photos --workdir runs/unet_photos [--checkpoint best]

Run evaluate.py on the run first: its tables go into the card. The file must stay under 4 MiB. The new model
is scored first on the run's validation split, beside the entry it replaces: one that does not beat its noisy
input, or scores below the shipped entry, is refused unless --force.
"""
from absl import flags, logging

from jaxdenoise import cli, zoo
from tools import zoo_build

flags.DEFINE_enum("name", None, zoo.names(), "the zoo entry to write", required=True)
flags.DEFINE_string("workdir", None, "the trained run", required=True)
flags.DEFINE_string("checkpoint", "best", "best | latest | a step number")
flags.DEFINE_bool("force", False, "ship it even when it scores below its noisy input or the shipped entry")
cli.paths("workdir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it reads at INFO
    which = int(FLAGS.checkpoint) if FLAGS.checkpoint.isdigit() else FLAGS.checkpoint
    h = zoo_build.build(FLAGS.name, FLAGS.workdir, which, force=FLAGS.force)
    s = h["scores"]
    print(f"wrote {zoo.folder()}/{FLAGS.name}.jaxdn ({h['bytes'] / 2**20:.2f} MiB: {h['model']}, "
          f"{h['parameters']:,} parameters, step {h['step']}) and {FLAGS.name}.md; validation at {s['noise']}: "
          f"{s['model']:.2f} dB (noisy {s['noisy']:.2f}" + (f", replaced {s['shipped']:.2f})" if s.get("shipped")
                                                           is not None else ")"))


if __name__ == "__main__":
    cli.run(main)
