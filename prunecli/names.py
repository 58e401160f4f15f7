"""Constants the command line needs before it imports anything heavy.

``prunecli --help`` builds every option of every command, so what an option lists (the log
formats) must come from a module that imports nothing: ``events`` pulls in ``logging`` and
``threading``, which ``--help`` should not pay for.
"""

LOG_FORMATS = ("auto", "rich", "plain", "json")  # events.FORMATS: rich bar, plain, JSON lines
