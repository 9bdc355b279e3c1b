"""Layout only: each module's build() makes its tab's components and returns them in a small dataclass."""
