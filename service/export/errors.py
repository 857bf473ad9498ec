"""Export failures the CLI reports as one clear line (offline, unknown source, parity)."""


class ExportError(RuntimeError):
    pass
