"""The commands of `glassgpt`, one module each. A module declares its command in one place: `HELP`
(the line in `glassgpt --help`), `DESCRIPTION` (optional, for `glassgpt NAME --help`),
`add_arguments(parser)` and `run(args)`, the handler. Heavy imports live inside `run`, so that
`glassgpt --help` and a usage error cost no torch import. `glassgpt.cli` builds the parser from
`COMMANDS` and turns errors into one line."""

COMMANDS = ("prepare", "datasets", "train", "plan", "sample", "analyze", "eval", "compare", "demo", "convert_hf",
            "sae", "circuit", "bench", "learn")
