"""glassgpt: a GPT written from first principles in PyTorch that you can both train fast and see through."""

__version__ = "0.1.0"

from glassgpt.config import GPTConfig, TrainConfig, RunConfig  # noqa: E402
from glassgpt.model import GPT  # noqa: E402

__all__ = ["GPT", "GPTConfig", "TrainConfig", "RunConfig", "__version__"]
