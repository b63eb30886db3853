"""The `resources` section: where Ray runs and where runs are stored."""

from __future__ import annotations

from pydantic import Field

from config.base import ConfigPath, StrictModel


class ResourcesConfig(StrictModel):
    address: str | None = Field(
        None, description="Ray address (`auto`, `ray://host:10001`); None starts a local Ray."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (default: all).")
    runs_dir: ConfigPath | None = Field(
        None, description="Folder holding runs/<study>; default `runs` in the working directory."
    )
    storage_path: str | None = Field(
        None, description="Ray Tune storage (a folder or s3://...); default under the run dir."
    )
