"""The base of every error the command line reports as a message rather than a traceback.

ProcessorError
├── ConfigError          a setting is wrong (config.py)
├── BrokerError          the broker cannot be started or reached (broker.py)
├── ReplayError          a replay failed; BrokerUnavailableError below it (replay.py)
├── ArtifactError        a model artifact is missing or corrupted (models/artifact.py)
├── ModelNotFoundError   the embedding model is not installed (models/embedder.py)
├── TrainingError        history is unusable for training (train.py)
└── FatalError           the processor cannot go on without losing data (pipeline/service.py)
"""


class ProcessorError(Exception):
    """An error whose message says what went wrong and what to do."""
