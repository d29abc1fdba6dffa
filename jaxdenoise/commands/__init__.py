"""The command-line jobs, one module each: absl flags defined at import, then ``main``; ``run()`` parses
``sys.argv`` and runs it with one-line errors (``cli.run``). ``scripts/*.py`` in a checkout and the installed
``jaxdenoise <command>`` console command (``cli.console``, whose table ``cli.COMMANDS`` names them) both
call ``run()``."""
